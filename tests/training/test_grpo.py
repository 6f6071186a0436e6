"""The GRPO module's pieces on a tiny random model: the reference policy (none at beta 0, a copy, or the LoRA base),
log-probabilities that match what generation sampled from, a zero KL against an equal reference, a zero gradient
for constant rewards, audio windows per prompt, completion masks, seeds, and the stage settings."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from afnext.config import compose_config
from afnext.errors import ConfigError
from afnext.training.curriculum import plan_stages
from afnext.training.grpo import GRPOModule, Rollout, rollout_seed
from afnext.training.grpo_loss import group_advantages, k3_kl, policy_loss
from afnext.training.grpo_settings import GRPOSettings
from afnext.training.rewards import AccuracyReward, RewardSet
from afnext.training.rollout import RolloutPrompts, completion_masks, window_owners
from tests.helpers import tone_mix

G = 3


@pytest.fixture(scope="module")
def built():
    """A tiny model of experiment=tiny (random weights) and its left-padding processor."""
    from afnext.data.processor import AudioProcessor

    torch.manual_seed(0)
    model = instantiate(compose_config("train", ["experiment=tiny"]).model, _convert_="all").eval()
    return model, AudioProcessor.from_model(model, padding_side="left")


def _module(model, **settings) -> GRPOModule:
    grpo = GRPOSettings(rewards={"accuracy": 1.0}, num_generations=G, max_new_tokens=6, **settings)
    rewards = RewardSet({"accuracy": AccuracyReward()}, {"accuracy": 1.0})
    return GRPOModule(model, settings=grpo, rewards=rewards, trainable=model.trainable)


QUESTIONS = ("What is heard?", "Which sound starts right after the melody?", "Count them.")


def _prompts(model, processor, seconds=(3.0, 10.0, 5.0), questions=QUESTIONS) -> RolloutPrompts:
    batch = processor(
        [[{"role": "user", "content": f"<sound>{q}"}] for q in questions[: len(seconds)]],
        audio=[[tone_mix(s, seed=int(s))] for s in seconds],
        add_generation_prompt=True,
    )
    owners = window_owners(model, batch["input_ids"], batch["input_features_mask"])
    return RolloutPrompts(
        batch["input_ids"], batch["attention_mask"], batch["input_features"],
        batch["input_features_mask"], owners,
    )  # fmt: skip


def _rollout(model, prompts, generated: torch.Tensor) -> Rollout:
    mask, truncated = completion_masks(generated, model.llm.stop_token_ids())
    n = generated.shape[0]
    return Rollout(prompts=prompts, completion_ids=generated, completion_mask=mask, loss_mask=mask,
                   truncated=truncated, advantages=torch.zeros(n))  # fmt: skip


def test_beta_zero_builds_no_reference_and_beta_builds_a_frozen_unregistered_copy(built):
    model, _ = built
    assert _module(model).reference is None and _module(model).reference_mode == "none"
    module = _module(model, beta=0.04)
    assert module.reference_mode == "copy" and module.reference is not model
    assert not any(p.requires_grad for p in module.reference.parameters())
    assert all(not k.startswith("_reference") for k in module.state_dict())  # not in checkpoints
    assert sum(p.numel() for p in module.parameters()) == sum(p.numel() for p in model.parameters())


def test_with_lora_the_reference_is_the_base_with_adapters_off(built):
    import copy

    model = copy.deepcopy(built[0])
    model.llm.add_lora({"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]})
    model.set_trainable(["lora"])
    module = _module(model, beta=0.04)
    assert module.reference is None and module.reference_mode == "adapters_off"
    model.set_trainable(["lora", "connector"])
    with pytest.raises(ConfigError, match=r"set it to \[lora\] or grpo.beta=0"):
        _module(model, beta=0.04)
    assert _module(model, beta=0.0).reference is None  # no KL: anything may train


def test_window_owners_and_prompt_selection(built):
    model, processor = built
    prompts = _prompts(model, processor)  # 3 s, 10 s (two 8 s windows), 5 s
    assert prompts.window_owner.tolist() == [0, 1, 1, 2]
    alone = _prompts(model, processor, seconds=(10.0,), questions=QUESTIONS[1:2])
    picked = prompts.select(torch.tensor([1]))
    assert torch.equal(picked["input_features"], alone.input_features)
    with torch.no_grad():
        got = model.embed_inputs(
            picked["input_ids"], picked["input_features"], picked["input_features_mask"]
        )
        want = model.embed_inputs(alone.input_ids, alone.input_features, alone.input_features_mask)
    width = want.shape[1]  # the selected prompt is left-padded to the batch's width
    torch.testing.assert_close(got[:, -width:], want)


def test_log_probs_match_what_generation_sampled_from(built):
    """Left-padded prompts of different lengths: the training forward sees the positions generation saw."""
    model, processor = built
    model.eval()
    prompts = _prompts(model, processor)
    module = _module(model)
    with torch.no_grad():
        embeds = model.embed_inputs(
            prompts.input_ids, prompts.input_features, prompts.input_features_mask
        )
        out = model.llm.generate(
            input_ids=prompts.input_ids.repeat_interleave(G, 0),
            inputs_embeds=embeds.repeat_interleave(G, 0),
            attention_mask=prompts.attention_mask.repeat_interleave(G, 0),
            do_sample=True, top_k=0, max_new_tokens=6, output_logits=True, return_dict_in_generate=True,
            eos_token_id=model.llm.stop_token_ids(), pad_token_id=model.llm.tokenizer.pad_token_id,
        )  # fmt: skip
    generated = out.sequences[:, prompts.input_ids.shape[1] :]
    rollout = _rollout(model, prompts, generated)
    rows = torch.arange(generated.shape[0])
    with torch.no_grad():
        logps, entropy = module._logps(model, rollout, rows)
    sampled = torch.stack(out.logits, dim=1).log_softmax(-1).gather(2, generated[..., None])[..., 0]
    keep = rollout.completion_mask.bool()
    torch.testing.assert_close(logps[keep], sampled[keep], rtol=1e-4, atol=1e-4)
    assert bool((entropy[keep] > 0).all()) and bool((logps[~keep] == 0).all())


def test_kl_is_zero_when_policy_and_reference_are_equal(built):
    model, processor = built
    model.eval()
    prompts = _prompts(model, processor)
    generated = torch.randint(10, 200, (3 * G, 5))
    module = _module(model, beta=0.1)
    rollout = _rollout(model, prompts, generated)
    rows = torch.arange(3 * G)
    with torch.no_grad():
        policy = module._logps(model, rollout, rows)[0]
        reference = module._logps(module.reference, rollout, rows)[0]
    assert torch.equal(policy, reference)
    assert k3_kl(policy, reference).abs().max() == 0


def test_constant_rewards_give_a_zero_gradient_on_every_parameter(built):
    model, processor = built
    model.eval()
    prompts = _prompts(model, processor)
    module = _module(model)
    generated = torch.randint(10, 200, (3 * G, 5))
    rollout = _rollout(model, prompts, generated)
    model.zero_grad(set_to_none=True)
    logps, _ = module._logps(model, rollout, torch.arange(3 * G))
    advantages, zero_std = group_advantages(torch.ones(3 * G), G)
    assert zero_std.all()
    loss, _ = policy_loss(logps, None, advantages, rollout.loss_mask)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is None or g.abs().max() == 0 for g in grads)
    model.zero_grad(set_to_none=True)
    loss, _ = policy_loss(
        logps.detach().requires_grad_() * 1.0,
        None,
        torch.tensor([1.0, -1.0, 0.0] * G),
        rollout.loss_mask,
    )
    assert loss.requires_grad  # a varied group does move the policy


def test_completion_masks_end_at_the_first_stop_token():
    ids = torch.tensor([[5, 6, 9, 0, 0], [5, 9, 9, 9, 9], [5, 6, 7, 8, 4]])
    mask, truncated = completion_masks(ids, [9])
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]]
    assert truncated.tolist() == [False, False, True]


def test_rollout_seeds_are_stable_and_differ_by_step_and_rank():
    assert rollout_seed(0, 5) == rollout_seed(0, 5)
    assert (
        len({rollout_seed(0, 5), rollout_seed(0, 6), rollout_seed(0, 5, 1), rollout_seed(1, 5)})
        == 4
    )


def test_stage_settings_and_objective_are_checked():
    with pytest.raises(ConfigError, match=r"curriculum.stages.g.grpo has unknown keys \['group'\]"):
        GRPOSettings.from_config(
            {"rewards": {"accuracy": 1}, "group": 8}, "curriculum.stages.g.grpo"
        )
    with pytest.raises(ConfigError, match=r"grpo\.loss_type='ppo'"):
        GRPOSettings.from_config({"rewards": {"accuracy": 1}, "loss_type": "ppo"})
    with pytest.raises(ConfigError, match=r"grpo\.rewards"):
        GRPOSettings.from_config({})
    defaults = {"trainable": ["llm"], "lr": 1e-4, "max_steps": 5, "warmup_steps": 0}
    stages = {"sft": {}, "rl": {"objective": "grpo", "grpo": {"rewards": {"accuracy": 1.0}}}}
    planned = plan_stages(stages, defaults=defaults, order=["sft", "rl"])
    assert [s.objective for s in planned] == ["sft", "grpo"] and planned[1].grpo["rewards"] == {
        "accuracy": 1.0
    }
    with pytest.raises(ConfigError, match="objective='ppo'"):
        plan_stages({"x": {"objective": "ppo"}}, defaults=defaults, order=["x"])
    with pytest.raises(ConfigError, match="grpo block but objective='sft'"):
        plan_stages({"x": {"grpo": {"beta": 0.1}}}, defaults=defaults, order=["x"])


def test_the_forward_path_for_sharded_models_gives_the_same_log_probs(built):
    """FSDP2 models go through ``AudioLanguageModel.forward`` (logits of the completion positions); the fused path
    shares each prompt's audio encoding. Both give the same numbers."""
    from afnext.training.grpo_logps import _fused, _through_forward

    model, processor = built
    prompts = _prompts(model, processor)
    generated = torch.randint(10, 200, (3 * G, 5))
    rollout = _rollout(model, prompts, generated)
    rows = torch.tensor([0, 4, 5, 8])
    owners, keep = rows // G, rollout.completion_mask[rows].bool()
    with torch.no_grad():
        fused = _fused(model, prompts, owners, generated[rows], keep, 0.7, 4, False)
        forward = _through_forward(model, prompts, owners, generated[rows], keep, 0.7, False)
    for a, b in zip(fused, forward):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
