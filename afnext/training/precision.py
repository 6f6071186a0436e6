"""Float32 master weights under every strategy: what trains is stored in float32, compute runs in bf16.

AdamW's update at the curriculum's learning rates (1.5e-5 to 5e-5) is often below bfloat16's resolution (8 bits
of mantissa: 2**-8 relative), so a bfloat16 parameter would round most updates away. Trainable parameters are
therefore float32 whatever ``llm.dtype`` says; ``bf16-mixed`` computes in bfloat16 (autocast under DDP,
``MixedPrecisionPolicy`` under FSDP2). Frozen parts keep the dtype they were built in (bfloat16 saves memory
there). ``bf16-true`` stores everything in bfloat16: allowed as an explicit choice, with a warning.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

__all__ = ["TRUE_HALF_PRECISIONS", "use_master_weights"]

log = logging.getLogger(__name__)

TRUE_HALF_PRECISIONS = ("bf16-true", "16-true", "bf16", "16", "half")


def use_master_weights(
    model: nn.Module, precision: str | int | None, *, all_float32: bool = False
) -> int:
    """Cast the trainable floating-point parameters of ``model`` to float32, in place.

    Args:
        model: The model, with ``requires_grad`` already set by what trains.
        precision: The trainer's precision setting (``bf16-mixed``, ``32``, ``bf16-true``, ...).
        all_float32: Cast frozen parameters too (FSDP2 gathers a unit's parameters in one buffer).

    Returns:
        How many parameters were cast.
    """
    name = str(precision)
    if name in TRUE_HALF_PRECISIONS:
        log.warning(
            "trainer.precision=%s stores the trainable weights in 16 bits: AdamW updates smaller than about "
            "2**-8 of a weight (most of them at learning rates around 1e-5) round away and the model stops "
            "learning. Use trainer.precision=bf16-mixed (float32 master weights, bfloat16 compute) unless "
            "this is what you want.",
            name,
        )
        return 0
    cast = 0
    for param in model.parameters():
        wanted = (param.requires_grad or all_float32) and param.is_floating_point()
        if wanted and param.dtype != torch.float32:
            param.data = param.data.float()
            cast += 1
    return cast
