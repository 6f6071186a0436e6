"""Composing configs: afnext's ``conf/`` and the installed plugins' ``conf/`` folders on Hydra's search path.

The one place afnext turns ``group=option key=value`` overrides into a config (the CLI commands, the demo, tests
and scripts call :func:`compose_config`); ``afnext train`` runs as a Hydra application with the same search
path (:func:`search_dirs`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from afnext.errors import ConfigError
from afnext.plugins import afnext_conf_dir, discover_plugins

__all__ = [
    "build_on_meta",
    "compose_config",
    "config_groups",
    "expand_sweeps",
    "experiments",
    "search_dirs",
]


def search_dirs(subdir: str | None) -> list[Path]:
    """Config folders after the primary one: afnext's ``conf/<subdir>`` then each plugin's."""
    dirs: list[Path] = []
    if subdir:
        dirs.append(afnext_conf_dir() / subdir)
    for plugin in discover_plugins():
        if plugin.conf_dir is None:
            continue
        dirs.append(plugin.conf_dir)
        if subdir and (plugin.conf_dir / subdir).is_dir():
            dirs.append(plugin.conf_dir / subdir)
    return dirs


def compose_config(
    config_name: str, overrides: Sequence[str] = (), *, subdir: str | None = None
) -> Any:
    """Compose ``conf/<config_name>.yaml`` with overrides, afnext's and the plugins' config folders searched.

    Args:
        config_name: Primary config in afnext's ``conf/``.
        overrides: Hydra overrides (``encoder=whisper_large_v3``, ``trainer.max_steps=10``, ...).
        subdir: A sub-folder of ``conf/`` (and of each plugin's ``conf/``) whose groups are also top-level
            groups for this command (``reasoning`` for ``afnext data build``, so ``generator=template``).

    Returns:
        The composed ``DictConfig``.

    Raises:
        ConfigError: The overrides do not compose; the message is Hydra's, which names the key.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from hydra.initialize import get_gh_backup, restore_gh_from_backup
    from omegaconf.errors import OmegaConfBaseException

    extra = [f"file://{d}" for d in search_dirs(subdir)]
    all_overrides = list(overrides)
    if extra:
        all_overrides.append("hydra.searchpath=[" + ",".join(extra) + "]")
    # Inside a running Hydra application (``afnext train`` building its data on first use) Hydra is already
    # initialised: compose beside it and put the application's state back afterwards.
    outer = get_gh_backup() if GlobalHydra.instance().is_initialized() else None
    if outer is not None:
        GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(afnext_conf_dir()), version_base="1.3"):
            return compose(config_name=config_name, overrides=all_overrides)
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(
            f"could not compose config {config_name!r} with {list(overrides)}: {exc}"
        ) from exc
    finally:
        if outer is not None:
            restore_gh_from_backup(outer)


def config_groups(subdir: str | None = None) -> dict[str, list[str]]:
    """Config groups and their options, afnext's and the plugins'.

    Args:
        subdir: Also list the groups under this sub-folder (see :func:`compose_config`).

    Returns:
        ``{group: sorted option names}``; nested groups are named with ``/``.
    """
    roots = [afnext_conf_dir(), *search_dirs(subdir)]
    groups: dict[str, set[str]] = {}
    for root in roots:
        for yaml_file in root.rglob("*.yaml"):
            rel = yaml_file.relative_to(root)
            if len(rel.parts) < 2:
                continue
            groups.setdefault("/".join(rel.parts[:-1]), set()).add(yaml_file.stem)
    return {group: sorted(options) for group, options in sorted(groups.items())}


def build_on_meta(cfg: Any) -> Any:
    """Instantiate ``cfg.model`` with every parameter on the ``meta`` device (no memory, no init)."""
    import torch
    from hydra.utils import instantiate

    with torch.device("meta"):
        return instantiate(cfg.model, _convert_="all")


def experiments() -> list[str]:
    """The global recipes (``experiment=<name>``) found on disk, afnext's and the plugins'."""
    return config_groups().get("experiment", [])


def expand_sweeps(overrides: Sequence[str]) -> list[list[str]]:
    """The jobs of a sweep (``afnext train -m key=a,b other=x,y``): one override list per combination, in
    Hydra's order (the cartesian product, the first swept key varying slowest).

    Raises:
        ConfigError: An override Hydra cannot parse.
    """
    import itertools

    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as exc:
        raise ConfigError(f"could not parse the overrides {list(overrides)}: {exc}") from exc
    choices: list[list[str]] = []
    for override in parsed:
        if override.is_sweep_override():
            key = override.get_key_element()
            choices.append([f"{key}={value}" for value in override.sweep_string_iterator()])
        else:
            choices.append([override.input_line])
    return [list(job) for job in itertools.product(*choices)]
