"""Per-token log-probabilities of sampled completions under a policy (or the reference), for the GRPO loss.

One forward over ``prompt + completion`` per completion: the prompts stay left-padded as they were for
generation and the positions are counted over the real tokens (``cumsum(mask) - 1``), which is what transformers'
``generate`` gives them, so the log-probabilities are those of the distribution that was sampled (checked against
``generate``'s own logits in ``tests/training/test_grpo.py``). Two ways:

* ``fused`` (a plain or DDP model): the audio of each prompt is encoded once and its embeddings shared by the
  prompt's completions, the decoder gives the final hidden states, and :func:`afnext.training.logprobs.token_logprobs`
  takes the log-probabilities of the completion tokens chunk by chunk, never building ``(tokens, vocabulary)``;
* ``logits`` (an FSDP2-sharded model, whose root must run its own ``forward`` for its weights to be gathered and
  its gradients reduce-scattered): the model's ``forward`` with each completion's audio, keeping the logits of the
  completion positions only (``logits_to_keep``, as TRL does), then a log-softmax.
"""

from __future__ import annotations

from typing import Any

import torch

from afnext.training.logprobs import token_logprobs

__all__ = ["completion_logps"]


def _is_sharded(model: Any) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def completion_logps(
    model: Any,
    rollout: Any,
    rows: torch.Tensor,
    *,
    num_generations: int,
    temperature: float,
    chunk_size: int = 1024,
    idle_audio: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probabilities and entropies of the completions ``rows`` of a rollout under ``model``.

    Args:
        model: An :class:`afnext.model.AudioLanguageModel` (possibly FSDP2-sharded).
        rollout: A :class:`afnext.training.grpo.Rollout` (``prompts``, ``completion_ids``, ``completion_mask``).
        rows: ``(m,)`` completion indices (completion ``i`` answers prompt ``i // num_generations``).
        num_generations: Completions per prompt.
        temperature: The sampling temperature (logits are divided by it).
        chunk_size: Tokens per LM-head block (``fused``).
        idle_audio: Prompts without audio still run the audio path times 0 (several ranks, see
            ``AudioLanguageModel.forward``).

    Returns:
        ``(logps, entropy)``: ``(m, C)`` float32, 0 off the completion mask; ``logps`` carries gradients when
        enabled, ``entropy`` (nats) never does.
    """
    owners = torch.div(rows, num_generations, rounding_mode="floor")
    completions = rollout.completion_ids[rows]  # (m, C)
    keep = rollout.completion_mask[rows].bool()
    if _is_sharded(model):
        logps, entropy = _through_forward(
            model, rollout.prompts, owners, completions, keep, temperature, idle_audio
        )
    else:
        logps, entropy = _fused(
            model, rollout.prompts, owners, completions, keep, temperature, chunk_size, idle_audio
        )
    zeros = torch.zeros(completions.shape, dtype=torch.float32, device=completions.device)
    return zeros.masked_scatter(keep, logps), zeros.masked_scatter(keep, entropy.detach())


def _positions(attention: torch.Tensor) -> torch.Tensor:
    """Positions over the real tokens of left-padded rows (as ``generate`` counts them)."""
    return (attention.cumsum(-1) - 1).clamp(min=0)


def _fused(
    model: Any,
    prompts: Any,
    owners: torch.Tensor,
    completions: torch.Tensor,
    keep: torch.Tensor,
    temperature: float,
    chunk_size: int,
    idle_audio: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    unique, inverse = torch.unique(owners, sorted=True, return_inverse=True)
    inputs = prompts.select(unique)
    features = inputs.get("input_features")
    embeds = model.embed_inputs(inputs["input_ids"], features, inputs.get("input_features_mask"))
    embeds = embeds[
        inverse
    ]  # (m, Lp, D): each prompt's audio encoded once, shared by its completions
    embeds = torch.cat(
        [embeds, model.llm.embed(completions).to(embeds.dtype)], dim=1
    )  # (m, Lp + C, D)
    attention = torch.cat([inputs["attention_mask"][inverse], torch.ones_like(completions)], dim=1)
    hidden = model.llm.hidden_states(
        inputs_embeds=embeds,
        attention_mask=attention,
        position_ids=_positions(attention),
        use_cache=False,
    )
    start = (
        inputs["input_ids"].shape[1] - 1
    )  # the last prompt position predicts the first completion token
    hidden = hidden[:, start : start + completions.shape[1]]  # (m, C, D)
    logps, entropy = token_logprobs(
        hidden[keep], model.llm.output_weight(), completions[keep],
        temperature=temperature, chunk_size=chunk_size,
    )  # fmt: skip
    if idle_audio and features is None:
        logps = logps + model.idle_audio_term()
    return logps, entropy


def _through_forward(
    model: Any,
    prompts: Any,
    owners: torch.Tensor,
    completions: torch.Tensor,
    keep: torch.Tensor,
    temperature: float,
    idle_audio: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.cat([prompts.input_ids[owners], completions], dim=1)  # (m, Lp + C)
    attention = torch.cat([prompts.attention_mask[owners], torch.ones_like(completions)], dim=1)
    inputs: dict[str, Any] = {}
    if prompts.input_features is not None and prompts.window_owner is not None:
        windows = torch.cat(
            [torch.nonzero(prompts.window_owner == p)[:, 0] for p in owners.tolist()]
        )
        inputs = {
            "input_features": prompts.input_features[
                windows
            ],  # each completion's own copy of its audio
            "input_features_mask": prompts.input_features_mask[windows],
        }
    length = completions.shape[1]
    out = model(
        input_ids=ids, attention_mask=attention, position_ids=_positions(attention),
        logits_to_keep=length + 1, use_cache=False, idle_audio=idle_audio, **inputs,
    )  # fmt: skip
    logits = (
        out.logits[:, :length].float() / temperature
    )  # (m, C, V): positions Lp - 1 ... Lp + C - 2
    logits = logits[keep]  # (tokens, V)
    log_probs = torch.log_softmax(logits, dim=-1)
    logps = log_probs.gather(1, completions[keep][:, None])[:, 0]
    with torch.no_grad():
        entropy = -(log_probs.exp() * log_probs).sum(-1)
    return logps, entropy
