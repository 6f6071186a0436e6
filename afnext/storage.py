"""Files on disk: the one atomic writer, JSON, and checkpoint folders (config.json, sharded safetensors).

Every write in afnext goes through :func:`atomic_write` (or :func:`atomic_dir` for a whole folder): a temporary
file in the same folder, flushed to disk and renamed over the target, so a killed process never leaves a
half-written file behind. Loading prefers safetensors; a ``pytorch_model.bin`` is read with
``torch.load(weights_only=True)`` so no pickled code ever runs.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from afnext.errors import CheckpointError

__all__ = [
    "atomic_dir",
    "atomic_torch_save",
    "atomic_write",
    "atomic_write_text",
    "read_config",
    "read_state_dict",
    "write_json",
    "write_state_dict",
]

_SINGLE = "model.safetensors"
_INDEX = "model.safetensors.index.json"
_BIN = "pytorch_model.bin"
_BIN_INDEX = "pytorch_model.bin.index.json"


def read_config(path: str | Path, name: str = "config.json") -> dict[str, Any]:
    """Read a JSON config from a checkpoint folder.

    Raises:
        CheckpointError: The folder or file is missing or is not valid JSON.
    """
    file = Path(path) / name
    if not Path(path).is_dir():
        raise CheckpointError(f"{path}: checkpoint folder does not exist")
    if not file.is_file():
        raise CheckpointError(f"{file}: missing; a checkpoint folder needs its {name}")
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{file}: not valid JSON ({exc})") from exc


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """All weights of a checkpoint folder, from safetensors (single or sharded) or a weights-only .bin.

    Raises:
        CheckpointError: No weights file, a shard listed in the index is missing, or a file is corrupt.
    """
    from safetensors.torch import load_file

    folder = Path(path)
    if (folder / _INDEX).is_file() or (folder / _SINGLE).is_file():
        files = _shards(folder, _INDEX, _SINGLE)
        state: dict[str, torch.Tensor] = {}
        for file in files:
            try:
                state.update(load_file(str(file)))
            except Exception as exc:
                raise CheckpointError(f"{file}: cannot read safetensors ({exc})") from exc
        return state
    if (folder / _BIN_INDEX).is_file() or (folder / _BIN).is_file():
        state = {}
        for file in _shards(folder, _BIN_INDEX, _BIN):
            try:
                state.update(torch.load(file, map_location="cpu", weights_only=True))
            except Exception as exc:
                raise CheckpointError(
                    f"{file}: cannot read with weights_only=True ({exc}); convert it to safetensors"
                ) from exc
        return state
    raise CheckpointError(
        f"{folder}: no weights found (looked for {_SINGLE}, {_INDEX}, {_BIN}, {_BIN_INDEX})"
    )


def _shards(folder: Path, index_name: str, single_name: str) -> list[Path]:
    if (folder / index_name).is_file():
        index = read_config(folder, index_name)
        names = sorted(set(index.get("weight_map", {}).values()))
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise CheckpointError(
                f"{folder / index_name}: lists shards that are missing: {missing}"
            )
        return [folder / n for n in names]
    return [folder / single_name]


@contextmanager
def atomic_write(target: str | Path, mode: str = "wb") -> Iterator[Any]:
    """Open a temporary file beside ``target``; rename it over ``target`` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        encoding = None if "b" in mode else "utf-8"
        with os.fdopen(fd, mode, encoding=encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``target``; swap it in place of ``target`` on success.

    A killed or failed save leaves the previous ``target`` (if any) untouched; the swap itself is two
    renames on the same file system.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def atomic_write_text(target: str | Path, text: str) -> None:
    """Write text (UTF-8) atomically."""
    with atomic_write(target, "w") as handle:
        handle.write(text)


def atomic_torch_save(obj: Any, target: str | Path) -> None:
    """``torch.save`` to ``target`` atomically (Lightning checkpoints, see ``AtomicCheckpointIO``)."""
    with atomic_write(target) as handle:
        torch.save(obj, handle)


def write_json(target: str | Path, data: dict[str, Any]) -> None:
    """Write JSON atomically."""
    with atomic_write(target, "w") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")


def write_state_dict(
    folder: str | Path,
    state: dict[str, torch.Tensor],
    *,
    max_shard_bytes: int = 5 * 1024**3,
    metadata: dict[str, str] | None = None,
) -> list[Path]:
    """Write weights as safetensors, sharded above ``max_shard_bytes`` with a transformers-style index.

    Each file is written atomically; write into a fresh folder (see :func:`atomic_dir`) so no stale
    shard of an earlier save can mix with these.

    Returns:
        The files written.
    """
    from safetensors.torch import save

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # safetensors refuses two names on one storage (tied weights): each name after the first gets its own
    # copy. Formats that re-tie on load drop the duplicate before calling this (see native.save_afnext);
    # transformers' AF3 / Music Flamingo classes never re-tie, so an HF-format folder needs both copies.
    tensors: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, int]] = set()
    for key in sorted(state):
        value = state[key].detach().to("cpu")
        storage = (value.untyped_storage().data_ptr(), value.untyped_storage().nbytes())
        if storage in seen and value.numel():
            value = value.clone()
        seen.add(storage)
        tensors[key] = value.contiguous()
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key in sorted(tensors):
        nbytes = tensors[key].numel() * tensors[key].element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = tensors[key]
        size += nbytes
    meta = {"format": "pt", **(metadata or {})}
    written: list[Path] = []
    if len(shards) == 1:
        with atomic_write(folder / _SINGLE) as handle:
            handle.write(save(shards[0], metadata=meta))
        return [folder / _SINGLE]
    weight_map: dict[str, str] = {}
    for i, shard in enumerate(shards, start=1):
        name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        with atomic_write(folder / name) as handle:
            handle.write(save(shard, metadata=meta))
        weight_map.update(dict.fromkeys(shard, name))
        written.append(folder / name)
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    write_json(folder / _INDEX, {"metadata": {"total_size": total}, "weight_map": weight_map})
    return [*written, folder / _INDEX]
