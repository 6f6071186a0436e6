"""afnext: build, train, evaluate and serve long-context audio-language models (Audio Flamingo Next style)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["AudioLanguageModel", "__version__"]

if TYPE_CHECKING:
    from afnext.model import AudioLanguageModel


def __getattr__(name: str) -> Any:
    # Lazy: `import afnext` stays cheap (no torch / transformers import) for the CLI's --help.
    if name == "AudioLanguageModel":
        from afnext.model import AudioLanguageModel

        return AudioLanguageModel
    raise AttributeError(f"module 'afnext' has no attribute {name!r}")
