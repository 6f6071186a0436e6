"""Per-token log-probabilities (and entropies) of chosen tokens from final hidden states, chunked over tokens.

GRPO needs ``log p(token)`` for every completion token, with gradients, and its entropy for logging. Building
the ``(tokens, vocabulary)`` logits and their log-softmax at once costs ``tokens x vocabulary`` floats twice (and
their gradients): 45,000 tokens x 151,672 rows is 27 GB per copy in float32. Here the LM head runs on one chunk of
tokens at a time: the forward keeps only ``(tokens,)`` results, the backward recomputes each chunk's logits and
uses the closed-form gradient ``d log p_y / d logits = onehot(y) - softmax(logits)``, so the peak is one
``(chunk, vocabulary)`` block. This is the choice the issue offered as "a chunked gather"; the fused
cross-entropy kernel (``afnext_kernels.linear_cross_entropy``) reduces over tokens and has no per-token output, and
one call per token would launch the LM head once per token.

Logits are divided by the sampling temperature before the softmax, as TRL's ``GRPOTrainer`` does
(``_get_per_token_logps_and_entropies``): the log-probabilities are those of the distribution that was sampled.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["token_logprobs"]


def _chunk_logits(hidden: torch.Tensor, weight: torch.Tensor, temperature: float) -> torch.Tensor:
    """``(C, V)`` float32 logits of one chunk at ``temperature`` (the product in the weight's dtype)."""
    return (hidden.to(weight.dtype) @ weight.T).float() / temperature


class _TokenLogProbs(torch.autograd.Function):
    """``(hidden, weight, targets) -> (log p(target), entropy)`` per token; entropy has no gradient."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        targets: torch.Tensor,
        temperature: float,
        chunk_size: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n = hidden.shape[0]
        logps = torch.empty(n, dtype=torch.float32, device=hidden.device)
        entropy = torch.empty(n, dtype=torch.float32, device=hidden.device)
        for start in range(0, n, chunk_size):
            end = min(n, start + chunk_size)
            logits = _chunk_logits(hidden[start:end], weight, temperature)  # (C, V)
            lse = torch.logsumexp(logits, dim=-1)  # (C,)
            logps[start:end] = logits.gather(1, targets[start:end, None])[:, 0] - lse
            probs = torch.exp(logits - lse[:, None])
            entropy[start:end] = lse - (probs * logits).sum(-1)
        ctx.save_for_backward(hidden, weight, targets)
        ctx.temperature, ctx.chunk_size = temperature, chunk_size
        ctx.mark_non_differentiable(entropy)
        return logps, entropy

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, grad_logps: torch.Tensor, grad_entropy: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None, None]:
        hidden, weight, targets = ctx.saved_tensors
        temperature, chunk_size = ctx.temperature, ctx.chunk_size
        grad_hidden = torch.zeros_like(hidden, dtype=torch.float32)
        grad_weight = torch.zeros_like(weight, dtype=torch.float32)
        for start in range(0, hidden.shape[0], chunk_size):
            end = min(hidden.shape[0], start + chunk_size)
            rows = hidden[start:end]
            logits = _chunk_logits(rows, weight, temperature)  # (C, V)
            grad = -torch.softmax(logits, dim=-1)
            grad[torch.arange(end - start, device=grad.device), targets[start:end]] += 1.0
            grad *= grad_logps[start:end, None].float() / temperature  # (C, V): d loss / d (h W^T)
            grad_hidden[start:end] = grad @ weight.float()
            grad_weight += grad.T @ rows.float()
        needs = ctx.needs_input_grad
        return (
            grad_hidden.to(hidden.dtype) if needs[0] else None,
            grad_weight.to(weight.dtype) if needs[1] else None,
            None,
            None,
            None,
        )


def token_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    *,
    temperature: float = 1.0,
    chunk_size: int = 1024,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability and entropy of each token's next-token distribution, chunked over tokens.

    Args:
        hidden: ``(N, D)`` final hidden states of the positions that predict ``targets``.
        weight: ``(V, D)`` LM-head weight (the logits are ``hidden @ weight.T``).
        targets: ``(N,)`` token ids whose log-probabilities are wanted.
        temperature: Logits are divided by this (the sampling temperature).
        chunk_size: Tokens per LM-head block (peak memory ``chunk_size x V`` floats).

    Returns:
        ``(logps, entropy)``: ``(N,)`` float32 each; ``logps`` is differentiable in ``hidden`` and ``weight``,
        ``entropy`` (nats, of the tempered distribution) is not.
    """
    if hidden.shape[0] == 0:
        empty = hidden.new_zeros(0, dtype=torch.float32) + 0.0 * hidden.sum()
        return empty, empty.detach()
    device_type = hidden.device.type
    with torch.autocast(device_type, enabled=False):
        return _TokenLogProbs.apply(
            hidden, weight, targets.long(), float(temperature), max(1, int(chunk_size))
        )
