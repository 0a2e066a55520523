"""GRPO's pure functions against hand-computed values."""

import math

import pytest
import torch

from tinylora.trainers.losses import aggregate, group_advantages, k3_kl, policy_loss, token_logprobs


def test_group_advantages_by_hand():
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 1.0]])
    adv, zero = group_advantages(r)
    std0 = math.sqrt(((0.5**2) * 4) / 3)  # unbiased std of [1,0,0,1]
    assert torch.allclose(adv[0], torch.tensor([0.5, -0.5, -0.5, 0.5]) / (std0 + 1e-6))
    assert torch.equal(adv[1], torch.zeros(4)) and zero.tolist() == [False, True, False]
    std2 = math.sqrt((3 * 0.25**2 + 0.75**2) / 3)
    assert torch.allclose(adv[2], torch.tensor([-0.25, -0.25, -0.25, 0.75]) / (std2 + 1e-6))
    unscaled, _ = group_advantages(r, scale_std=False)
    assert torch.allclose(unscaled[2], torch.tensor([-0.25, -0.25, -0.25, 0.75]))
    assert torch.equal(group_advantages(torch.zeros(2, 3))[0], torch.zeros(2, 3))
    with pytest.raises(ValueError):
        group_advantages(torch.zeros(4))


def test_token_logprobs_by_hand():
    logits = torch.tensor([[[0.0, math.log(3.0)], [2.0, 2.0]]])  # p = [1/4, 3/4], [1/2, 1/2]
    lp = token_logprobs(logits, torch.tensor([[1, 0]]))
    assert torch.allclose(lp, torch.tensor([[math.log(0.75), math.log(0.5)]]))
    lp_t = token_logprobs(logits, torch.tensor([[1, 0]]), temperature=2.0)  # logits/2: p ∝ [1, √3]
    assert torch.allclose(lp_t[0, 0], torch.tensor(math.log(math.sqrt(3) / (1 + math.sqrt(3)))))


def test_aggregations_with_padding():
    per = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    per_padded = per + (1 - mask) * 100  # garbage under the padding must not count
    assert aggregate(per_padded, mask, "token-mean") == pytest.approx(10 / 4)
    assert aggregate(per_padded, mask, "seq-mean") == pytest.approx((2 + 4) / 2)
    assert aggregate(per_padded, mask, "dr-grpo", max_len=5) == pytest.approx(10 / (2 * 5))
    # micro-batches with global normalisers sum to the full-batch value
    a = aggregate(per[:1], mask[:1], "token-mean", total_tokens=4) + aggregate(per[1:], mask[1:], "token-mean",
                                                                               total_tokens=4)
    assert a == pytest.approx(10 / 4)
    with pytest.raises(ValueError):
        aggregate(per, mask, "sum")


def test_policy_loss_clip_boundaries():
    mask = torch.ones(1, 4)
    old = torch.zeros(1, 4)
    # ratios 0.5, 0.9, 1.3, 1.6 for a positive and a negative advantage
    logp = torch.log(torch.tensor([[0.5, 0.9, 1.3, 1.6]]))
    loss_pos, st_pos = policy_loss(logp, old, torch.tensor([1.0]), mask, clip_low=0.2, clip_high=0.4)
    # A>0: per token max(-ρ, -clip(ρ)) = -min(ρ, clip(ρ)) → -0.5, -0.9, -1.3, -1.4
    assert loss_pos.item() == pytest.approx(-(0.5 + 0.9 + 1.3 + 1.4) / 4)
    assert st_pos["clip_frac"] == pytest.approx(1 / 4)  # only ρ=1.6 is clipped for A>0
    loss_neg, st_neg = policy_loss(logp, old, torch.tensor([-1.0]), mask, clip_low=0.2, clip_high=0.4)
    # A<0: per token max(ρ, clip(ρ)) → 0.8, 0.9, 1.3, 1.6
    assert loss_neg.item() == pytest.approx((0.8 + 0.9 + 1.3 + 1.6) / 4)
    assert st_neg["clip_frac"] == pytest.approx(1 / 4)  # only ρ=0.5 is clipped for A<0


def test_gradient_flows_only_inside_clip_range():
    logp = torch.log(torch.tensor([[1.0, 1.6]])).requires_grad_(True)
    loss, _ = policy_loss(logp, torch.zeros(1, 2), torch.tensor([1.0]), torch.ones(1, 2), clip_high=0.4)
    loss.backward()
    assert logp.grad[0, 0] == pytest.approx(-0.5) and logp.grad[0, 1] == 0.0  # clipped token: no gradient


def test_on_policy_ratio_one_and_k3_kl():
    logp = torch.tensor([[-1.0, -2.0]])
    loss, st = policy_loss(logp, logp.clone(), torch.tensor([2.0]), torch.ones(1, 2))
    assert loss.item() == pytest.approx(-2.0) and st["clip_frac"] == 0
    kl = k3_kl(torch.tensor([-1.0]), torch.tensor([-1.5]))
    assert kl.item() == pytest.approx(math.exp(-0.5) + 0.5 - 1)
    assert k3_kl(torch.tensor([-1.0]), torch.tensor([-1.0])).item() == 0
    loss_kl, st = policy_loss(logp, logp.clone(), torch.tensor([0.0]), torch.ones(1, 2),
                              ref_logp=torch.tensor([[-1.5, -2.0]]), kl_coef=0.1)
    assert loss_kl.item() == pytest.approx(0.1 * (math.exp(-0.5) + 0.5 - 1) / 2)
    assert st["kl"] == pytest.approx((math.exp(-0.5) + 0.5 - 1) / 2)
