"""``afnext plan``: the memory a training run needs per GPU, stage by stage, before any GPU is asked for.

Sizes come from the model built on the ``meta`` device (no weights) and the composed config: the parameters of
each part and of the FSDP units, the LLM's and the encoder's widths, the stage's longest audio, context, batch,
what trains, the precision, the strategy (DDP replicates, FSDP2 shards over every rank), sequence parallelism and
activation checkpointing. Terms, per GPU:

* parameters, gradients and optimizer state (AdamW: two float32 moments) of the float32 master weights;
* gathered parameters (FSDP2): the root unit (embeddings, LM head, connector) and two layers in the compute
  dtype, the current one and the one being fetched;
* LLM activations: with checkpointing each layer's input plus one layer recomputed, else every layer's saved
  tensors; the per-token bytes follow a Qwen / Llama decoder layer (two RMSNorms, q / k / v, rotary, attention,
  o_proj, SwiGLU);
* attention workspace: flash-style kernels (Triton, flash-attn) keep ``O(tokens)``; the PyTorch reference (the
  CPU path) keeps the probabilities, ``heads x sum(len^2)`` per layer;
* loss workspace: the fused loss holds a chunk of logits and the LM head's float32 gradient; the naive loss four
  ``tokens x vocabulary`` float32 tensors;
* encoder activations (its windows, spread over a sequence-parallel group), and the whole row's embeddings that
  every rank of a group holds before the split;
* GRPO stages: sampling, which ends before the update starts (so the larger of the two counts): the KV cache of
  ``batch_size x num_generations`` completions of ``prompt + max_new_tokens`` tokens, and their prefill through
  one layer; with ``grpo.beta > 0`` the frozen reference policy, a copy of the weights sharded like them (none
  with LoRA: the reference is the LLM with its adapters off).

Estimates, not measurements: ``tests/training/test_plan.py`` compares them with measured peaks on CPU
(within 25%), and ``benchmarks/gpu_check.sh`` does the same on a GPU when one is available.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from omegaconf import DictConfig

from afnext.data.cost import ModelDims
from afnext.errors import ConfigError

__all__ = ["StagePlan", "parse_bytes", "plan_run", "plan_table"]

GiB = 1024**3
_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": GiB,
}
_OVERHEAD_GPU = 1.5 * GiB  # CUDA context, NCCL buffers, allocator slack


def parse_bytes(text: str) -> int:
    """``80GiB``, ``80GB``, ``141 GiB``, ``1e9`` -> bytes."""
    match = re.fullmatch(r"\s*([0-9.eE+]+)\s*([a-zA-Z]*)\s*", str(text))
    if not match or match.group(2).lower() not in _UNITS:
        raise ConfigError(f"--gpu-memory {text!r}: give a size such as 80GiB, 141GiB or 80GB")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


@dataclass
class StagePlan:
    """Memory of one curriculum stage per GPU (bytes), with the verdict."""

    name: str
    world: int
    data_parallel: int
    sequence_parallel: int
    strategy: str
    audio_seconds: float
    tokens_per_gpu: int
    windows_per_gpu: int
    terms: dict[str, int]
    activations_without_checkpointing: int
    total_bytes: int
    gpu_bytes: int
    fits: bool
    longest_audio_seconds: float | None = None
    suggested_sequence_parallel: int | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Setting:
    """What a stage's memory depends on besides the model."""

    trainable: tuple[str, ...]
    world: int
    sp: int
    fsdp: bool
    compute_bytes: int
    checkpointing: bool
    reference_attention: bool
    fused_loss: bool
    packed: bool
    batch_size: int
    max_length: int | None
    gpu: bool
    rollout: tuple[int, int] | None = (
        None  # GRPO: (completions per rank per rollout, max_new_tokens)
    )
    kl_reference: bool = False  # GRPO with beta > 0: a frozen reference policy (a copy unless LoRA)


def _layer_bytes_per_token(d: ModelDims, b: int) -> int:
    """Saved tensors of one decoder layer per token (two RMSNorms keep a float32 copy and their output)."""
    h, kv, inter = d.llm_hidden, d.llm_kv_heads * d.llm_head_dim, d.llm_intermediate
    return 2 * (4 * h + b * h) + b * (5 * h + 3 * kv + 4 * inter)


def _encoder_bytes_per_position(d: ModelDims, ffn: int, b: int) -> int:
    """Saved tensors of one encoder layer per frame (two LayerNorms, q / k / v, attention, GELU MLP)."""
    w = d.encoder_width
    return 2 * (4 * w + b * w) + b * (5 * w + 3 * ffn)


def _memory(
    model: Any, dims: ModelDims, s: _Setting, seconds: float
) -> tuple[dict[str, int], int, int, int]:
    """``(terms, activations without checkpointing, tokens per GPU, windows per GPU)`` for audio of ``seconds``."""
    from afnext.training.strategy import shard_units

    b = s.compute_bytes
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    shard = s.world if s.fsdp else 1
    terms: dict[str, int] = {
        "parameters": (4 * trainable + (4 if s.fsdp or b == 4 else b) * frozen) // shard,
        # DDP across several ranks keeps its reduce buckets beside the gradients
        "gradients": 4 * trainable // shard * (2 if not s.fsdp and s.world > 1 else 1),
        "optimizer": 8 * trainable // shard,
    }
    if s.kl_reference and not getattr(model.llm, "has_lora", False):
        # GRPO's frozen reference: a copy of the weights, sharded like them under FSDP2 (with LoRA the reference
        # is the same LLM with its adapters off: no copy)
        terms["reference"] = terms["parameters"]
    if s.fsdp:
        units = shard_units(model)
        in_units = {id(p) for u in units for p in u.parameters()}
        root = sum(p.numel() for p in model.parameters() if id(p) not in in_units)
        largest = max((sum(p.numel() for p in u.parameters()) for u in units), default=0)
        terms["gathered_parameters"] = b * (root + 2 * largest)
    # Tokens and windows of one micro-batch on one GPU.
    per_sample = dims.tokens_for_seconds(seconds)
    if s.max_length is not None:
        per_sample = min(per_sample, s.max_length)
    tokens = s.max_length if s.packed and s.max_length else per_sample * s.batch_size
    docs = [per_sample] * max(1, tokens // per_sample)
    local = math.ceil(tokens / s.sp)
    windows = dims.windows_for_seconds(seconds) * (s.batch_size if not s.packed else len(docs))
    local_windows = math.ceil(windows / s.sp)
    h = dims.llm_hidden
    layer = _layer_bytes_per_token(dims, b) * local
    llm_grad = any(p in s.trainable for p in ("encoder", "connector", "llm", "lora"))
    full = dims.llm_layers * layer if llm_grad else layer
    # With checkpointing: every layer's input, and one layer's saved tensors, recomputed during the backward.
    terms["llm_activations"] = (
        (dims.llm_layers * local * h * b + layer) if s.checkpointing else full
    )
    if s.reference_attention:
        pairs = sum(d * d for d in docs) / s.sp
        per_layer = int(
            4 * dims.llm_heads * pairs * 2
        )  # the masked scores and the probabilities, float32
        # Saved for every layer (one with checkpointing), plus one layer's backward working on them.
        saved = 1 if s.checkpointing or not llm_grad else dims.llm_layers
        terms["attention"] = per_layer * (saved + 2)
    else:
        terms["attention"] = 4 * dims.llm_heads * local * 2 + 2 * b * local * h
    targets = max(
        1, min(local, 2048 * s.batch_size)
    )  # assistant turns: far fewer than the audio tokens
    if s.fused_loss:
        chunk = max(
            256,
            1 << max(math.ceil(targets / max(1, math.ceil(dims.vocab / h))) - 1, 0).bit_length(),
        )
        head = 4 * dims.vocab * h if ("llm" in s.trainable) else 0
        terms["loss"] = 4 * min(chunk, targets) * dims.vocab * 2 + head + 2 * b * targets * h
    else:
        terms["loss"] = 4 * 4 * local * dims.vocab
    ffn = int(
        getattr(
            getattr(getattr(model.encoder, "tower", None), "config", None), "intermediate_size", 0
        )
    )
    ffn = ffn or 4 * dims.encoder_width
    per_window = _encoder_bytes_per_position(dims, ffn, b) * dims.encoder_positions
    if "encoder" in s.trainable:
        enc = (
            local_windows
            * (dims.encoder_layers * dims.encoder_positions * dims.encoder_width * b + per_window)
            if s.checkpointing
            else local_windows * per_window * dims.encoder_layers
        )
    else:
        enc = local_windows * per_window  # no gradient: one layer's tensors at a time
    # The encoder's own attention back end: eager, and afnext's varlen reference off the GPU, keep each layer's
    # float32 probabilities (every layer's when the encoder trains without checkpointing); SDPA (a key mask,
    # afnext.encoders.whisper) and the flash-style kernels keep O(frames).
    config = getattr(model.encoder, "config", None) or getattr(
        getattr(model.encoder, "model", None), "config", None
    )  # AF-Whisper's tower config, HuBERT / WavLM's model config
    enc_attn = str(getattr(config, "_attn_implementation", None) or "sdpa")
    if enc_attn == "eager" or (enc_attn == "afnext_varlen" and not s.gpu):
        heads = int(getattr(config, "num_attention_heads", 1) or 1)
        probs = local_windows * 4 * heads * dims.encoder_positions**2
        trained_layers = "encoder" in s.trainable and not s.checkpointing
        enc += probs * (dims.encoder_layers if trained_layers else 1)
    terms["encoder_activations"] = enc
    terms["row_buffers"] = (
        b * tokens * h * (2 if s.sp > 1 else 1)
    )  # embeddings (and the row before the split)
    if s.rollout is not None:
        # GRPO sampling (no gradients, before the update): the KV cache of every completion, prompt included,
        # and the prefill of all of them through one layer at a time (hidden states, q/k/v, the SwiGLU).
        completions, new_tokens = s.rollout
        sequences = completions * (per_sample + new_tokens)
        kv = 2 * dims.llm_layers * dims.llm_kv_heads * dims.llm_head_dim * b * sequences
        prefill = completions * per_sample * b * (4 * h + 3 * dims.llm_intermediate)
        terms["rollout"] = kv + prefill
    without = dims.llm_layers * layer + (local_windows * per_window * dims.encoder_layers)
    return terms, without, local, local_windows


def _setting(cfg: DictConfig, stage: Any, sp: int | None = None) -> _Setting:
    trainer = cfg.trainer
    devices, nodes = trainer.get("devices", 1), int(trainer.get("num_nodes", 1) or 1)
    if not isinstance(devices, int):
        raise ConfigError(
            f"afnext plan needs a number of GPUs per node: trainer.devices={devices!r}; give trainer.devices=8"
        )
    strategy = str(trainer.get("strategy", "") or "")
    if sp is None:
        sp = stage.sequence_parallel or trainer.get("sequence_parallel", 1) or 1
    sp = int(sp)
    fsdp = "FSDP2Strategy" in strategy or sp > 1
    precision = str(trainer.get("precision", "bf16-mixed"))
    attn = str(cfg.llm.get("attn_implementation") or "sdpa")
    accelerator = str(trainer.get("accelerator", "gpu"))
    gpu = accelerator in ("gpu", "cuda", "auto")
    data = {**cfg.data, **dict(stage.data)}
    rollout, kl_reference = None, False
    if getattr(stage, "objective", "sft") == "grpo":
        grpo = dict(stage.grpo or {})
        rollout = (
            int(data.get("batch_size") or 1) * int(grpo.get("num_generations", 8)),
            int(grpo.get("max_new_tokens", 256)),
        )
        kl_reference = float(grpo.get("beta", 0.0) or 0.0) > 0
    return _Setting(
        trainable=tuple(stage.trainable),
        world=devices * nodes,
        sp=sp,
        fsdp=fsdp,
        compute_bytes=2 if "16" in precision else 4,
        checkpointing=bool(cfg.optim.module.get("activation_checkpointing", False)),
        # Flash-style attention keeps O(tokens): every back end on a GPU (Triton, flash-attn, SDPA's flash), and
        # SDPA on the CPU without a mask. The CPU's varlen reference, eager, and SDPA with a mask (packed rows get
        # a block-diagonal one) keep the probabilities.
        reference_attention=not gpu
        and (attn in ("afnext_varlen", "eager") or bool(data.get("pack", False))),
        fused_loss=str(cfg.model.get("loss_impl", "fused")) == "fused",
        packed=bool(data.get("pack", False)),
        batch_size=int(data.get("batch_size") or 1),
        max_length=stage.max_length,
        gpu=gpu,
        rollout=rollout,
        kl_reference=kl_reference,
    )


_STATE = ("parameters", "gradients", "optimizer", "gathered_parameters", "reference")


def _total(terms: dict[str, int], gpu: bool) -> int:
    """The model's state plus the larger of the training step's memory and a GRPO rollout's (they never
    coexist: sampling ends before the forward / backward passes start)."""
    state = sum(terms.get(k, 0) for k in _STATE)
    step = sum(v for k, v in terms.items() if k not in _STATE and k != "rollout")
    return int(state + max(step, terms.get("rollout", 0)) + (_OVERHEAD_GPU if gpu else 0))


def plan_run(cfg: DictConfig, gpu_bytes: int, *, search: bool = True) -> list[StagePlan]:
    """Plan every stage of a composed training config.

    Args:
        cfg: The composed ``train`` config.
        gpu_bytes: Memory of one GPU.
        search: Also find the longest audio that fits and the smallest sequence-parallel degree that fits.
    """
    import torch
    from hydra.utils import instantiate

    from afnext.training.run import _stages

    with torch.device("meta"):
        model = instantiate(cfg.model, _convert_="all")
    dims = ModelDims.from_model(model)
    plans = []
    for stage in _stages(cfg):
        model.set_trainable(stage.trainable)
        setting = _setting(cfg, stage)
        if setting.world % setting.sp:
            raise ConfigError(
                f"trainer.sequence_parallel={setting.sp} does not divide the {setting.world} GPUs"
            )
        seconds = float(stage.max_audio_seconds or 30.0)
        terms, without, tokens, windows = _memory(model, dims, setting, seconds)
        total = _total(terms, setting.gpu)
        plan = StagePlan(
            name=stage.name,
            world=setting.world,
            data_parallel=setting.world // setting.sp,
            sequence_parallel=setting.sp,
            strategy="fsdp2" if setting.fsdp else "ddp",
            audio_seconds=seconds,
            tokens_per_gpu=tokens,
            windows_per_gpu=windows,
            terms=terms,
            activations_without_checkpointing=without,
            total_bytes=total,
            gpu_bytes=gpu_bytes,
            fits=total <= gpu_bytes,
        )
        if search:
            plan.longest_audio_seconds = _longest(model, dims, setting, gpu_bytes)
            plan.suggested_sequence_parallel = _smallest_sp(
                cfg, stage, model, dims, gpu_bytes, seconds
            )
        plans.append(plan)
    return plans


def _longest(model: Any, dims: ModelDims, setting: _Setting, gpu_bytes: int) -> float | None:
    """Longest audio (seconds, whole windows up to 2 hours) whose step fits, and whose tokens fit the stage's
    context (longer samples are skipped anyway)."""
    best = None
    low, high = 1, 240  # in windows
    if setting.max_length is not None:
        while high > 1 and dims.tokens_for_seconds(high * dims.window_seconds) > setting.max_length:
            high -= 1
    while low <= high:
        mid = (low + high) // 2
        seconds = mid * dims.window_seconds
        terms, *_ = _memory(model, dims, setting, seconds)
        if _total(terms, setting.gpu) <= gpu_bytes:
            best, low = seconds, mid + 1
        else:
            high = mid - 1
    return best


def _smallest_sp(
    cfg: DictConfig, stage: Any, model: Any, dims: ModelDims, gpu_bytes: int, seconds: float
) -> int | None:
    """Smallest sequence-parallel degree (dividing the GPUs and the heads) at which the stage fits."""
    world = _setting(cfg, stage).world
    for sp in range(1, world + 1):
        if world % sp:  # Ulysses over a degree that divides the heads, a ring for the rest
            continue
        setting = _setting(cfg, stage, sp=sp)
        terms, *_ = _memory(model, dims, setting, seconds)
        if _total(terms, setting.gpu) <= gpu_bytes:
            return sp
    return None


def _gib(n: int | float | None) -> str:
    return "-" if n is None else f"{n / GiB:.1f}"


def plan_table(plans: list[StagePlan]) -> Any:
    """A rich table of the plans (GiB per GPU): the model's state (weights, gradients, optimizer state, gathered
    layers), activations (and without checkpointing), workspace (attention, loss, whole-row buffers), encoder."""
    from rich.table import Table

    title = (
        f"memory per GPU (GiB, of {plans[0].gpu_bytes / GiB:.0f})" if plans else "memory per GPU"
    )
    table = Table(title=title)
    columns = ["stage", "sp", "audio", "tokens/GPU", "state", "activations", "no ckpt", "workspace", "encoder",
               "rollout", "total", "fits", "longest audio", "smallest sp"]  # fmt: skip
    for c in columns:
        table.add_column(c, justify="left" if c in ("stage", "fits") else "right")
    for p in plans:
        t = p.terms
        state = sum(t.get(k, 0) for k in _STATE)
        table.add_row(
            p.name, str(p.sequence_parallel), f"{p.audio_seconds / 60:.1f} min", f"{p.tokens_per_gpu:,}",
            _gib(state), _gib(t["llm_activations"]), _gib(p.activations_without_checkpointing),
            _gib(t["attention"] + t["loss"] + t["row_buffers"]), _gib(t["encoder_activations"]),
            _gib(t["rollout"]) if "rollout" in t else "-", _gib(p.total_bytes), "yes" if p.fits else "NO",
            "-" if p.longest_audio_seconds is None else f"{p.longest_audio_seconds / 60:.1f} min",
            "-" if p.suggested_sequence_parallel is None else str(p.suggested_sequence_parallel),
        )  # fmt: skip
    return table
