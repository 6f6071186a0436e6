"""FSDP2 (``torch.distributed.fsdp.fully_shard``) through Lightning's ``ModelParallelStrategy``.

Every transformer layer of the encoder and of the LLM (transformers' ``GradientCheckpointingLayer``: Whisper /
AF-Whisper, HuBERT / WavLM encoder layers, Qwen / Llama decoder layers) is its own FSDP unit, so only one layer's
full parameters exist at a time; the rest (embeddings, connector, LM head, norms) forms the root unit. Master
weights stay float32; ``MixedPrecisionPolicy`` gathers them in the compute dtype of the trainer's precision
(``bf16-mixed``: bfloat16) and reduces gradients in float32. The device mesh has two dimensions,
``("data_parallel", "sequence_parallel")``: the data sampler shards over the first only, and the second holds
the ranks that share one long sequence (``sequence_parallel=1`` until that lands).

Checkpoints are PyTorch distributed checkpoints (one shard per rank, ``torch.distributed.checkpoint``), written
atomically: into a fresh hidden folder, then a symbolic link with the checkpoint's name (``last.ckpt``) is
swapped to it with one ``os.replace``, so a process killed at any moment leaves the previous checkpoint or the
new one, never half of one. A resumed run loads them through Lightning (``trainer.fit(ckpt_path=...)``).
"""

from __future__ import annotations

import os
import shutil
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.collectives.torch_collective import default_pg_timeout
from lightning.pytorch.strategies import ModelParallelStrategy
from torch import nn

from afnext.errors import ConfigError

__all__ = ["FSDP2Strategy", "full_state_dict", "shard_model", "shard_units"]

_PRECISION_DTYPES = {
    "bf16-mixed": torch.bfloat16,
    "16-mixed": torch.float16,
    "bf16-true": torch.bfloat16,
    "16-true": torch.float16,
}


def shard_units(model: nn.Module) -> list[nn.Module]:
    """The modules that become FSDP units of their own: every encoder and LLM transformer layer."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    return [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]


def shard_model(
    model: nn.Module,
    mesh: Any,
    *,
    param_dtype: torch.dtype | None = None,
    reduce_dtype: torch.dtype | None = torch.float32,
    reshard_after_forward: bool = True,
) -> nn.Module:
    """Apply ``fully_shard`` to each layer (:func:`shard_units`), then to ``model`` (the root unit).

    Args:
        model: The module to shard, in place (its parameters become ``DTensor`` shards).
        mesh: A 1-D device mesh of the ranks that shard the parameters.
        param_dtype: Dtype parameters are gathered in for compute (None: their own).
        reduce_dtype: Dtype gradients are reduced in.
        reshard_after_forward: Free each layer's gathered parameters after its forward (ZeRO-3); False keeps
            them until the backward (ZeRO-2: more memory, fewer all-gathers).
    """
    from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

    if isinstance(model, FSDPModule):
        return model  # configure_model runs again on a second fit / validate
    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=reduce_dtype)
    for unit in shard_units(model):
        fully_shard(unit, mesh=mesh, mp_policy=policy, reshard_after_forward=reshard_after_forward)
    fully_shard(model, mesh=mesh, mp_policy=policy, reshard_after_forward=reshard_after_forward)
    return model


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole (unsharded) state dict on rank 0, on the CPU; empty on other ranks. Collective: every rank
    calls it. A plain module returns its own state dict."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from torch.distributed.fsdp import FSDPModule

    if not any(isinstance(m, FSDPModule) for m in model.modules()):
        return model.state_dict()
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=options)


class FSDP2Strategy(ModelParallelStrategy):
    """Lightning strategy: FSDP2 over a ``(data_parallel, sequence_parallel)`` device mesh.

    Parameters are sharded over every rank (the data-parallel and the sequence-parallel dimensions together, as
    torchtitan shards over ``dp_shard x cp``): the ranks of a sequence-parallel group hold parts of the same rows,
    so their gradients add up like those of data-parallel ranks.

    Args:
        sequence_parallel: Ranks that share one sequence (the mesh's second dimension); must divide the world.
        ring_size: Of those, how many form a ring (Ring attention across them; Ulysses within each of the
            ``sequence_parallel / ring_size`` groups); must divide ``sequence_parallel``.
        reshard_after_forward: See :func:`shard_model`.
        save_distributed_checkpoint: One shard per rank (True) or one full file written by rank 0.
        process_group_backend: ``nccl`` / ``gloo`` (default: by device).
        timeout: Collective timeout.
    """

    def __init__(
        self,
        sequence_parallel: int = 1,
        ring_size: int = 1,
        reshard_after_forward: bool = True,
        save_distributed_checkpoint: bool = True,
        process_group_backend: str | None = None,
        timeout: timedelta | None = default_pg_timeout,
    ) -> None:
        if (
            int(sequence_parallel) < 1
            or int(ring_size) < 1
            or int(sequence_parallel) % int(ring_size)
        ):
            raise ConfigError(
                f"trainer.sequence_parallel={sequence_parallel} and trainer.ring_size={ring_size}: both must be "
                "at least 1 and ring_size must divide sequence_parallel (Ulysses degree = their ratio)"
            )
        super().__init__(
            data_parallel_size="auto",
            tensor_parallel_size=int(sequence_parallel),
            save_distributed_checkpoint=save_distributed_checkpoint,
            process_group_backend=process_group_backend,
            timeout=timeout,
        )
        self.sequence_parallel = int(sequence_parallel)
        self.ring_size = int(ring_size)
        self.reshard_after_forward = reshard_after_forward
        self._shard_mesh: Any = None
        self._sequence_mesh: Any = None

    def setup_environment(self) -> None:
        from torch.distributed.device_mesh import init_device_mesh

        self._setup_distributed()
        world, sp = self.world_size, self.sequence_parallel
        if world % sp:
            raise ConfigError(
                f"trainer.sequence_parallel={sp} does not divide the {world} processes "
                f"(trainer.devices x trainer.num_nodes); pick a divisor of {world}"
            )
        self._data_parallel_size, self._tensor_parallel_size = world // sp, sp
        device = self.root_device.type
        self._device_mesh = init_device_mesh(
            device, (world // sp, sp), mesh_dim_names=("data_parallel", "sequence_parallel")
        )
        self._shard_mesh = init_device_mesh(device, (world,), mesh_dim_names=("shard",))
        if sp > 1:
            ring = self.ring_size
            self._sequence_mesh = init_device_mesh(
                device,
                (world // sp, ring, sp // ring),
                mesh_dim_names=("data_parallel", "ring", "ulysses"),
            )
        assert self.lightning_module is not None
        self.lightning_module._device_mesh = self._device_mesh

    @property
    def compute_dtype(self) -> torch.dtype | None:
        """Dtype of the gathered parameters: the trainer precision's 16-bit type, else None (float32)."""
        return _PRECISION_DTYPES.get(str(getattr(self.precision_plugin, "precision", "")))

    def sequence_group(self) -> Any:
        """This rank's :class:`afnext.llms.sequence_parallel.SequenceGroup` (None without sequence parallelism)."""
        if self.sequence_parallel == 1:
            return None
        from afnext.llms.sequence_parallel import SequenceGroup

        mesh = self._sequence_mesh
        ulysses, ring = mesh["ulysses"], mesh["ring"]
        return SequenceGroup(
            ulysses=ulysses.get_group() if ulysses.size() > 1 else None,
            ulysses_size=ulysses.size(),
            ulysses_rank=ulysses.get_local_rank(),
            ring=ring.get_group() if ring.size() > 1 else None,
            ring_size=ring.size(),
            ring_rank=ring.get_local_rank(),
            group=self.device_mesh["sequence_parallel"].get_group(),
        )

    def shard(self, model: nn.Module) -> nn.Module:
        """Shard ``model`` over every rank (called from ``LightningModule.configure_model``)."""
        return shard_model(
            model,
            self._shard_mesh,
            param_dtype=self.compute_dtype,
            reshard_after_forward=self.reshard_after_forward,
        )

    # ----------------------------------------------------------------------------------------------
    # Atomic sharded checkpoints
    # ----------------------------------------------------------------------------------------------
    def save_checkpoint(
        self, checkpoint: dict[str, Any], filepath: str | os.PathLike, storage_options: Any = None
    ) -> None:
        """Write the checkpoint into a new hidden folder, then point ``filepath`` (a symbolic link) at it."""
        if not self._save_distributed_checkpoint:
            return super().save_checkpoint(checkpoint, filepath, storage_options)
        target = Path(self.broadcast(str(filepath)))
        token = self.broadcast(uuid.uuid4().hex[:12])
        data = target.parent / f".{target.name}.{token}"
        super().save_checkpoint(checkpoint, data, storage_options)  # every rank writes its shard
        self.barrier("afnext_checkpoint_written")
        if self.global_rank == 0:
            previous = _link_target(target)
            if (
                target.exists() and not target.is_symlink()
            ):  # a folder from an older run: replace it
                shutil.rmtree(target) if target.is_dir() else target.unlink()
            link = target.parent / f".{target.name}.{token}.link"
            os.symlink(data.name, link)
            os.replace(link, target)  # atomic: the name now means the new checkpoint
            # The previous checkpoint, and folders a killed save left without a link.
            for stale in target.parent.glob(f".{target.name}.*"):
                if stale != data and stale.is_dir() and not stale.is_symlink():
                    shutil.rmtree(stale, ignore_errors=True)
            if previous is not None and previous != data:
                shutil.rmtree(previous, ignore_errors=True)
        self.barrier("afnext_checkpoint_linked")

    def remove_checkpoint(self, filepath: str | os.PathLike) -> None:
        """Remove a checkpoint written by :meth:`save_checkpoint` (the link and its folder)."""
        if self.global_rank != 0:
            return
        path = Path(filepath)
        previous = _link_target(path)
        if path.is_symlink():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        if previous is not None:
            shutil.rmtree(previous, ignore_errors=True)


def _link_target(path: Path) -> Path | None:
    """The folder a checkpoint link points at (None when ``path`` is not a link)."""
    if not path.is_symlink():
        return None
    return path.parent / os.readlink(path)
