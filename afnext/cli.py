"""The ``afnext`` command line: each command composes a Hydra config from ``conf/`` plus overrides.

Commands are registered in ``COMMANDS`` below; each takes the remaining arguments (Hydra overrides and the
command's own flags). Hydra appears here and in ``afnext.training`` only.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from afnext.errors import AfnextError, ConfigError
from afnext.plugins import afnext_conf_dir, discover_plugins

__all__ = ["COMMANDS", "compose_config", "config_groups", "main"]


def _search_dirs(subdir: str | None) -> list[Path]:
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
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    extra = [f"file://{d}" for d in _search_dirs(subdir)]
    all_overrides = list(overrides)
    if extra:
        all_overrides.append("hydra.searchpath=[" + ",".join(extra) + "]")
    try:
        with initialize_config_dir(config_dir=str(afnext_conf_dir()), version_base="1.3"):
            return compose(config_name=config_name, overrides=all_overrides)
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(
            f"could not compose config {config_name!r} with {list(overrides)}: {exc}"
        ) from exc


def config_groups(subdir: str | None = None) -> dict[str, list[str]]:
    """Config groups and their options, afnext's and the plugins'.

    Args:
        subdir: Also list the groups under this sub-folder (see :func:`compose_config`).

    Returns:
        ``{group: sorted option names}``; nested groups are named with ``/``.
    """
    roots = [afnext_conf_dir(), *_search_dirs(subdir)]
    groups: dict[str, set[str]] = {}
    for root in roots:
        for yaml_file in root.rglob("*.yaml"):
            rel = yaml_file.relative_to(root)
            if len(rel.parts) < 2:
                continue
            groups.setdefault("/".join(rel.parts[:-1]), set()).add(yaml_file.stem)
    return {group: sorted(options) for group, options in sorted(groups.items())}


def _print_config(cfg: Any) -> None:
    from omegaconf import OmegaConf

    print(OmegaConf.to_yaml(cfg, resolve=False), end="")


def _cmd_data(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="afnext data",
        description="Dataset tools. `afnext data build generator=template source=synthetic "
        "source.num_scenes=200 out=DIR seed=3` writes audio, AF3-style JSONL splits and a summary.",
    )
    parser.add_argument("action", choices=["build"], help="what to do")
    parser.add_argument("--cfg", action="store_true", help="print the composed config and exit")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides")
    args = parser.parse_args(argv)
    from hydra.utils import instantiate

    cfg = compose_config("data_build", args.overrides, subdir="reasoning")
    if args.cfg:
        _print_config(cfg)
        return 0
    result = instantiate(cfg.build, _convert_="all")
    if result is not None and hasattr(result, "to_dict"):
        print(json.dumps(result.to_dict(), indent=2))
    return 0


def _cmd_config(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="afnext config", description="Print a composed config.")
    parser.add_argument("--name", default="train", help="primary config in conf/ (default: train)")
    parser.add_argument("--resolve", action="store_true", help="resolve interpolations")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides")
    args = parser.parse_args(argv)
    from omegaconf import OmegaConf

    cfg = compose_config(args.name, args.overrides)
    print(OmegaConf.to_yaml(cfg, resolve=args.resolve), end="")
    return 0


COMMANDS: dict[str, tuple[Callable[[list[str]], int], str]] = {
    "config": (_cmd_config, "print the composed config"),
    "data": (_cmd_data, "build datasets (TACoT data engine): afnext data build ..."),
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
    except AfnextError as exc:
        print(f"afnext {command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
