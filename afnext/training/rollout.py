"""Rollout engines: sample a group of completions per prompt for GRPO.

An engine implements :class:`RolloutEngine`: ``generate(prompts, ...) -> Generations`` and
``sync_weights(model)``. :class:`InProcessEngine` (the default, CPU and GPU) samples with the model being trained
through its KV-cached generation path (the audio is encoded once per prompt and its embeddings repeated for the
group, then transformers' ``generate``, as :meth:`afnext.model.AudioLanguageModel.generate` does for one answer
per prompt). A server engine (vLLM on GPU, whose model registry has AF3 / Music Flamingo / AF-Next) would send
the prompts and audio to the server in ``generate`` and push the updated weights in ``sync_weights``, which the
GRPO module calls after each rollout's updates, before the next rollout; none ships here.

Completion masks follow DAPO / TRL: a completion's tokens count up to and including its first end-of-turn token;
what follows is padding. A completion with no end-of-turn token within ``max_new_tokens`` is *truncated*.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

from afnext.errors import InputError

__all__ = [
    "Generations",
    "InProcessEngine",
    "Rollout",
    "RolloutEngine",
    "RolloutPrompts",
    "completion_masks",
    "rollout_seed",
    "window_owners",
]


@dataclass
class RolloutPrompts:
    """The prompts of one rollout.

    Attributes:
        input_ids: ``(P, L)`` left-padded prompt ids, each ending with the assistant turn's opening.
        attention_mask: ``(P, L)`` 1 on real tokens.
        input_features: ``(W, C, F)`` the audio windows of all prompts in order, or None.
        input_features_mask: ``(W, F)``, or None.
        window_owner: ``(W,)`` the prompt each window belongs to (:func:`window_owners`), or None.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    input_features: torch.Tensor | None = None
    input_features_mask: torch.Tensor | None = None
    window_owner: torch.Tensor | None = None

    def select(self, rows: torch.Tensor) -> dict[str, Any]:
        """Model inputs of the prompts ``rows`` (sorted, unique): ids, mask and their audio windows."""
        out: dict[str, Any] = {
            "input_ids": self.input_ids[rows],
            "attention_mask": self.attention_mask[rows],
        }
        if self.input_features is not None and self.window_owner is not None:
            keep = torch.isin(self.window_owner, rows.to(self.window_owner.device))
            if bool(keep.any()):
                out["input_features"] = self.input_features[keep]
                out["input_features_mask"] = self.input_features_mask[keep]  # type: ignore[index]
        return out


@dataclass
class Generations:
    """The completions of one rollout, the ``G`` of each prompt next to each other.

    Attributes:
        completion_ids: ``(P * G, C)`` sampled ids, padded after the end of each completion.
        completion_mask: ``(P * G, C)`` float, 1 up to and including the first end-of-turn token.
        truncated: ``(P * G,)`` bool, no end-of-turn token within the limit.
    """

    completion_ids: torch.Tensor
    completion_mask: torch.Tensor
    truncated: torch.Tensor


@runtime_checkable
class RolloutEngine(Protocol):
    """Samples completions for GRPO (see the module docstring)."""

    def generate(
        self,
        prompts: RolloutPrompts,
        *,
        num_generations: int,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        top_k: int | None,
        seed: int,
    ) -> Generations:
        """``num_generations`` sampled completions per prompt, reproducible for a given ``seed`` and weights."""
        ...

    def sync_weights(self, model: Any) -> None:
        """Make the engine sample from ``model``'s current weights (called after each rollout's updates)."""
        ...


def completion_masks(
    completion_ids: torch.Tensor, stop_ids: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks of sampled completions.

    Args:
        completion_ids: ``(N, C)`` generated ids (padding after a finished completion).
        stop_ids: Ids that end a completion (``<|im_end|>``, the tokenizer's end of text, ...).

    Returns:
        ``(mask (N, C) float, truncated (N,) bool)``: 1 up to and including the first stop token (everything
        when there is none), and whether there is none.
    """
    stops = torch.tensor(stop_ids, dtype=completion_ids.dtype, device=completion_ids.device)
    is_stop = torch.isin(completion_ids, stops)  # (N, C)
    finished = is_stop.any(dim=1)
    length = completion_ids.shape[1]
    first = torch.where(
        finished, is_stop.int().argmax(dim=1), torch.full_like(finished, length, dtype=torch.long)
    )
    positions = torch.arange(length, device=completion_ids.device)
    mask = (positions[None, :] <= first[:, None]).float()
    return mask, ~finished


def window_owners(
    model: Any, input_ids: torch.Tensor, input_features_mask: torch.Tensor | None
) -> torch.Tensor | None:
    """The prompt (row of ``input_ids``) each audio window belongs to.

    Windows fill the rows' ``<sound>`` slots in order, each yielding ``model.audio_tokens_for_frames`` tokens; a
    window that yields none belongs to the row of the window before it (as ``AudioLanguageModel`` assigns it).

    Args:
        model: The :class:`afnext.model.AudioLanguageModel`.
        input_ids: ``(P, L)`` prompt ids with their ``<sound>`` slots.
        input_features_mask: ``(W, F)`` valid frames of each window, or None.

    Returns:
        ``(W,)`` long, or None without audio.

    Raises:
        InputError: The windows' tokens do not fill the slots.
    """
    if input_features_mask is None:
        return None
    tokens = model.audio_tokens_for_frames(input_features_mask.sum(-1)).tolist()
    slots = (input_ids == model.audio_token_id).sum(dim=1).tolist()
    owners: list[int] = []
    row, filled = 0, 0
    for count in tokens:
        if count == 0:
            owners.append(owners[-1] if owners else 0)
            continue
        while row < len(slots) and filled >= slots[row]:
            row, filled = row + 1, 0
        if row >= len(slots):
            raise InputError(
                f"the audio yields {sum(tokens)} tokens but the prompts have {sum(slots)} <sound> slots"
            )
        owners.append(row)
        filled += count
    return torch.tensor(owners, dtype=torch.long, device=input_features_mask.device)


class InProcessEngine:
    """Samples with the model being trained (see the module docstring); ``sync_weights`` has nothing to do.

    Args:
        model: The :class:`afnext.model.AudioLanguageModel` (the policy itself, not a copy).
        synced_gpus: Every rank takes every decoding step until all are done (FSDP2, whose layers gather their
            weights collectively); the GRPO module sets it from its strategy.
    """

    def __init__(self, model: Any, *, synced_gpus: bool = False) -> None:
        self.model = model
        self.synced_gpus = synced_gpus

    @torch.no_grad()
    def generate(
        self,
        prompts: RolloutPrompts,
        *,
        num_generations: int,
        max_new_tokens: int,
        temperature: float,
        top_p: float = 1.0,
        top_k: int | None = None,
        seed: int = 0,
    ) -> Generations:
        """Sample ``num_generations`` completions per prompt with a KV cache, seeded (the global RNG is put back
        afterwards)."""
        model = self.model
        llm = model.llm
        embeds = model.embed_inputs(
            prompts.input_ids, prompts.input_features, prompts.input_features_mask
        )  # (P, L, D): the audio is encoded once per prompt

        def repeat(t: torch.Tensor) -> torch.Tensor:
            return t.repeat_interleave(num_generations, dim=0)  # (P * G, ...)

        stop_ids = llm.stop_token_ids()
        kwargs: dict[str, Any] = {
            "do_sample": True,
            "temperature": float(temperature),
            "top_p": float(top_p),
            "top_k": int(top_k) if top_k else 0,  # 0: off (transformers' default would be 50)
            "max_new_tokens": int(max_new_tokens),
            "eos_token_id": stop_ids,
            "pad_token_id": llm.tokenizer.pad_token_id,
            "synced_gpus": self.synced_gpus,
        }
        device = prompts.input_ids.device
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            out = llm.generate(
                input_ids=repeat(prompts.input_ids),
                inputs_embeds=repeat(embeds),
                attention_mask=repeat(prompts.attention_mask),
                **kwargs,
            )
        completions = out[:, prompts.input_ids.shape[1] :]  # (P * G, C)
        mask, truncated = completion_masks(completions, stop_ids)
        return Generations(completions, mask, truncated)

    def sync_weights(self, model: Any) -> None:
        """Nothing to do: this engine samples from the live model."""
        self.model = model


def rollout_seed(seed: int, step: int, rank: int = 0) -> int:
    """The sampling seed of the rollout that starts at optimizer step ``step`` on ``rank`` (stable across runs)."""
    digest = hashlib.blake2b(f"{seed}/{step}/{rank}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


class Rollout:
    """One rollout: prompts, completions, rewards, advantages and the log-probabilities the loss needs.

    Attributes (``N = P * G`` completions, ``C`` their padded length):
        prompts: :class:`RolloutPrompts` (``P`` prompts).
        samples: The :class:`RewardSample` of each prompt.
        completion_ids / completion_mask: ``(N, C)``; loss_mask: ``(N, C)`` (truncated rows zeroed when masked).
        truncated: ``(N,)`` bool; texts: the decoded completions.
        rewards / advantages: ``(N,)``; components: ``{name: (N,)}``; zero_std: ``(P,)`` bool.
        old_logps / ref_logps: ``(N, C)`` or None; seed: the sampling seed; step: the optimizer step it starts at.
    """

    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)

    @property
    def size(self) -> int:
        return int(self.completion_ids.shape[0])
