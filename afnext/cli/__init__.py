"""The ``afnext`` command line: each command composes a Hydra config from ``conf/`` plus overrides.

Commands are registered in ``COMMANDS`` below (written in ``training.py`` and ``inference.py``); each takes the remaining arguments (Hydra overrides and the
command's own flags). Hydra appears here and in ``afnext.training`` only.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from afnext.cli.inference import _cmd_chat, _cmd_eval, _cmd_export, _cmd_serve
from afnext.cli.training import (
    _cmd_config,
    _cmd_data,
    _cmd_demo,
    _cmd_info,
    _cmd_plan,
    _cmd_train,
    _cmd_validate,
)
from afnext.config import config_groups
from afnext.errors import AfnextError

__all__ = ["COMMANDS", "main"]


COMMANDS: dict[str, tuple[Callable[[list[str]], int], str]] = {
    "train": (
        _cmd_train,
        "train (Hydra overrides, -m sweeps, curricula): afnext train experiment=tiny",
    ),
    "validate": (_cmd_validate, "validation loss / accuracy of a saved model"),
    "chat": (_cmd_chat, 'ask about audio: afnext chat --checkpoint DIR --audio FILE "question"'),
    "serve": (_cmd_serve, "OpenAI-compatible server: afnext serve --checkpoint RUN --port 8000"),
    "export": (
        _cmd_export,
        "transformers / vLLM folder: afnext export --checkpoint RUN --format hf OUT",
    ),
    "demo": (_cmd_demo, "CPU demo: data, training, held-out accuracy, one chat answer"),
    "config": (_cmd_config, "print the composed config"),
    "info": (_cmd_info, "build a model on the meta device and print parameter counts per part"),
    "plan": (_cmd_plan, "memory per GPU of each training stage, the longest audio that fits"),
    "data": (_cmd_data, "build datasets (TACoT data engine): afnext data build ..."),
    "eval": (
        _cmd_eval,
        "benchmarks: afnext eval benchmark=mmau benchmark.root=DIR checkpoint=RUN; "
        "afnext eval score benchmark=mmau predictions=FILE --json",
    ),
}


def _usage() -> str:
    lines = ["usage: afnext <command> [overrides ...] [--help]", "", "commands:"]
    lines += [f"  {name:<10} {help_text}" for name, (_, help_text) in COMMANDS.items()]
    lines += ["", "config groups (pick with group=option):"]
    for group, options in config_groups().items():
        lines.append(f"  {group:<28} {', '.join(options)}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``afnext`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        print(f"afnext: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    try:
        return COMMANDS[command][0](rest)
    except Exception as exc:
        cause = _afnext_cause(exc)
        if cause is None:
            raise
        print(f"afnext {command}: error: {cause}", file=sys.stderr)
        return 1


def _afnext_cause(exc: BaseException) -> AfnextError | None:
    """The AfnextError behind ``exc``: itself, or the one Hydra's ``instantiate`` wrapped in an
    ``InstantiationException`` (possibly several levels deep); ``None`` for any other error."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, AfnextError):
            return current
        seen.add(id(current))
        current = current.__cause__
    return None
