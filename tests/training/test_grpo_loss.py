"""The GRPO objective against hand-computed values: group advantages, the clipped ratio loss under each TRL
aggregation, the k3 KL, micro-batching, and the chunked per-token log-probabilities."""

from __future__ import annotations

import math

import pytest
import torch

from afnext.errors import ConfigError
from afnext.training.grpo_loss import LOSS_TYPES, group_advantages, k3_kl, policy_loss
from afnext.training.logprobs import token_logprobs


def test_group_advantages_by_hand():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 0.5, 0.5])
    adv, zero_std = group_advantages(rewards, 4)
    std = math.sqrt(4 * 0.25 / 3)  # Bessel-corrected, as TRL's nanstd
    expected = [0.5 / (std + 1e-4), -0.5 / (std + 1e-4)] * 2
    torch.testing.assert_close(
        adv[:4], torch.tensor([expected[0], expected[1], expected[1], expected[0]])
    )
    assert adv[4:].abs().max() == 0  # a constant group teaches nothing
    assert zero_std.tolist() == [False, True]
    plain, _ = group_advantages(rewards, 4, scale="none")  # Dr. GRPO: no division
    torch.testing.assert_close(plain, torch.tensor([0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0]))
    batch, _ = group_advantages(rewards, 4, scale="batch")
    torch.testing.assert_close(batch, plain / (rewards.std() + 1e-4))
    with pytest.raises(ConfigError, match="num_generations=3"):
        group_advantages(rewards, 3)
    with pytest.raises(ConfigError, match="scale_rewards"):
        group_advantages(rewards, 4, scale="max")


def _fixed_group():
    """Two completions of two tokens: ratios 1.5 and 0.5 in each, advantages +1 and -1."""
    old = torch.zeros(2, 2)
    logps = torch.log(torch.tensor([[1.5, 0.5], [1.5, 0.5]])).requires_grad_()
    return logps, old, torch.tensor([1.0, -1.0]), torch.ones(2, 2)


def test_clipped_loss_by_hand_for_every_aggregation():
    logps, old, adv, mask = _fixed_group()
    # Per token -min(r A, clip(r, 0.8, 1.2) A): A=+1: -1.2 (clipped), -0.5; A=-1: 1.5, 0.8 (clipped).
    per_token = torch.tensor([[-1.2, -0.5], [1.5, 0.8]])
    expected = {
        "grpo": per_token.mean(1).mean(),  # mean of sequence means
        "bnpo": per_token.sum() / 4,  # token mean
        "dr_grpo": per_token.sum() / (2 * 10),  # sequences x max_completion_length
        "dapo": per_token.sum() / 4,  # tokens of the whole step (one rank)
    }
    for loss_type in LOSS_TYPES:
        loss, stats = policy_loss(
            logps, old, adv, mask, loss_type=loss_type, max_completion_length=10
        )
        torch.testing.assert_close(loss, expected[loss_type], msg=loss_type)
        assert stats.tokens == 4 and stats.clipped == 2  # (r=1.5, A>0) and (r=0.5, A<0)
    # The clipped tokens get no gradient; the others get -A r / 4 (bnpo) through logp = log r.
    loss, _ = policy_loss(logps, old, adv, mask, loss_type="bnpo")
    loss.backward()
    torch.testing.assert_close(logps.grad, torch.tensor([[0.0, -0.5 / 4], [1.5 / 4, 0.0]]))


def test_masked_tokens_and_clip_higher():
    logps, old, adv, _ = _fixed_group()
    mask = torch.tensor(
        [[1.0, 1.0], [1.0, 0.0]]
    )  # e.g. padding after the end of the second completion
    loss, stats = policy_loss(logps, old, adv, mask, loss_type="grpo")
    torch.testing.assert_close(loss, torch.tensor(((-1.2 - 0.5) / 2 + 1.5) / 2))
    assert stats.tokens == 3
    loss, _ = policy_loss(
        logps, old, adv, mask, loss_type="bnpo", epsilon_high=0.6
    )  # ratio 1.5 unclipped
    torch.testing.assert_close(loss, torch.tensor((-1.5 - 0.5 + 1.5) / 3))


def test_micro_batches_add_up_to_the_whole_step():
    torch.manual_seed(0)
    logps = torch.randn(6, 5) * 0.1
    old = logps + torch.randn(6, 5) * 0.3
    adv, mask = torch.randn(6), (torch.rand(6, 5) > 0.3).float()
    for loss_type in LOSS_TYPES:
        whole, _ = policy_loss(logps, old, adv, mask, loss_type=loss_type, max_completion_length=5)
        parts = sum(
            policy_loss(
                logps[rows], old[rows], adv[rows], mask[rows], loss_type=loss_type,
                max_completion_length=5, num_sequences=6, num_tokens=mask.sum(),
            )[0]
            for rows in (slice(0, 2), slice(2, 6))
        )  # fmt: skip
        torch.testing.assert_close(parts, whole, msg=loss_type)


def test_constant_rewards_give_a_zero_policy_gradient():
    logps = torch.randn(4, 3, requires_grad=True)
    adv, _ = group_advantages(torch.full((4,), 0.7), 4)
    loss, _ = policy_loss(logps, logps.detach() + 0.1, adv, torch.ones(4, 3))
    loss.backward()
    assert logps.grad is not None and logps.grad.abs().max() == 0


def test_k3_kl_is_zero_for_equal_policies_and_positive_otherwise():
    logps = torch.randn(3, 4)
    assert k3_kl(logps, logps).abs().max() == 0
    torch.testing.assert_close(
        k3_kl(torch.zeros(1), torch.full((1,), 0.5)), torch.tensor([math.exp(0.5) - 1.5])
    )
    assert bool((k3_kl(logps, logps + torch.randn(3, 4)) >= 0).all())
    logps_g = logps.clone().requires_grad_()
    adv, mask = torch.randn(3), torch.ones(3, 4)
    plain, _ = policy_loss(logps_g, None, adv, mask)
    with_kl, stats = policy_loss(logps_g, None, adv, mask, beta=0.5, ref_logps=logps)
    torch.testing.assert_close(with_kl, plain)
    assert stats.kl == 0
    with pytest.raises(ConfigError, match="ref_logps"):
        policy_loss(logps_g, None, adv, mask, beta=0.1)


@pytest.mark.parametrize(("n", "chunk", "temperature"), [(10, 3, 1.0), (7, 64, 0.7), (1, 1, 2.0)])
def test_chunked_log_probs_equal_the_full_log_softmax(n, chunk, temperature):
    torch.manual_seed(n)
    hidden = torch.randn(n, 16, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(50, 16, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 50, (n,))
    logps, entropy = token_logprobs(
        hidden, weight, targets, temperature=temperature, chunk_size=chunk
    )
    full = torch.log_softmax((hidden @ weight.T) / temperature, dim=-1)
    reference = full.gather(1, targets[:, None])[:, 0]
    torch.testing.assert_close(logps, reference.float())
    torch.testing.assert_close(entropy, -(full.exp() * full).sum(-1).float(), rtol=1e-4, atol=1e-4)
    grads = torch.autograd.grad((logps * torch.arange(n)).sum(), (hidden, weight))
    expected = torch.autograd.grad((reference * torch.arange(n)).sum(), (hidden, weight))
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)  # float32 inside
