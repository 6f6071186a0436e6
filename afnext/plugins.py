"""Third-party components: packages that declare an entry point in group ``afnext.plugins``.

A plugin package ``their_pkg`` declares, in its ``pyproject.toml``::

    [project.entry-points."afnext.plugins"]
    their_pkg = "their_pkg"

The entry point's value is the package's import name. The package ships a ``conf/`` folder as package data
(``their_pkg/conf/encoder/x.yaml``, ``their_pkg/conf/reasoning/generator/y.yaml``, ...). afnext imports the
package (so a broken plugin is an error at start, never a silent skip) and puts its ``conf/`` folder on
Hydra's search path, after afnext's own, so ``encoder=x`` picks the plugin's config.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import entry_points
from pathlib import Path

from afnext.errors import PluginError

__all__ = [
    "ENTRY_POINT_GROUP",
    "Plugin",
    "afnext_conf_dir",
    "discover_plugins",
]

ENTRY_POINT_GROUP = "afnext.plugins"


@dataclass(frozen=True)
class Plugin:
    """One loaded plugin.

    Attributes:
        name: The entry point's name.
        module: The import name the entry point points at.
        conf_dir: The plugin's ``conf/`` folder, or ``None`` if it ships none.
    """

    name: str
    module: str
    conf_dir: Path | None


def afnext_conf_dir() -> Path:
    """The folder holding afnext's own Hydra configs (installed as package ``afnext.conf``: a data lookup, so
    this lowest layer imports no afnext code)."""
    from importlib.resources import files

    return Path(str(files("afnext.conf"))).resolve()


@lru_cache(maxsize=1)
def discover_plugins() -> tuple[Plugin, ...]:
    """Import every package registered under ``afnext.plugins`` and find its ``conf/`` folder.

    Returns:
        The plugins, sorted by entry point name.

    Raises:
        PluginError: A registered package cannot be imported; the message names it and the distribution.
    """
    plugins = []
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        module_name = ep.value.split(":")[0].strip()
        dist = getattr(ep.dist, "name", "?")
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:  # a plugin that fails to load is an error, never a warning
            raise PluginError(
                f"afnext plugin {ep.name!r} (distribution {dist!r}) points at module {module_name!r}, "
                f"which failed to import: {type(exc).__name__}: {exc}. Fix or uninstall "
                f"that package (pip uninstall {dist})."
            ) from exc
        conf_dir = None
        for location in getattr(module, "__path__", []) or []:
            candidate = Path(location) / "conf"
            if candidate.is_dir():
                conf_dir = candidate.resolve()
                break
        plugins.append(Plugin(name=ep.name, module=module_name, conf_dir=conf_dir))
    return tuple(plugins)
