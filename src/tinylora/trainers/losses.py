"""GRPO's maths as pure functions: advantages, token log-probs, the clipped policy loss, k3 KL.

Each takes tensors and plain values (no config objects), so each is tested against hand-computed
values. Shapes: N sequences (= prompts × group size), T completion positions; ``mask`` (N, T) is 1
on real completion tokens (EOS included) and 0 on padding.
"""

from __future__ import annotations

import torch

AGGREGATIONS = ("token-mean", "seq-mean", "dr-grpo")


def group_advantages(rewards: torch.Tensor, scale_std: bool = True, eps: float = 1e-6
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Group-normalised advantages A = (r − mean_g) / std_g for rewards of shape (B, G).

    ``std`` is the unbiased sample std of the group (as in TRL/verl); ``scale_std=False`` gives
    Dr.GRPO's unscaled r − mean. Groups whose rewards are all equal carry no signal: their
    advantages are exactly 0. Returns (advantages (B, G), zero_std (B,) bool).
    """
    if rewards.ndim != 2:
        raise ValueError(f"rewards must be (prompts, group), got shape {tuple(rewards.shape)}")
    rewards = rewards.float()
    mean = rewards.mean(dim=1, keepdim=True)
    centred = rewards - mean
    zero_std = (rewards == rewards[:, :1]).all(dim=1)
    if scale_std and rewards.shape[1] > 1:
        std = rewards.std(dim=1, keepdim=True)
        adv = centred / (std + eps)
    else:
        adv = centred
    adv = torch.where(zero_std[:, None], torch.zeros_like(adv), adv)
    return adv, zero_std


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log p(target) under softmax(logits / temperature); logits (N, T, V), targets (N, T) → (N, T).

    Uses logsumexp + gather rather than a full log_softmax, so no second (N, T, V) tensor is made.
    The temperature must match the one used for sampling, or the ratio is not 1 on-policy.
    """
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 estimator of KL(π‖π_ref) per token: exp(ref − logp) − (ref − logp) − 1 ≥ 0."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1


def aggregate(per_token: torch.Tensor, mask: torch.Tensor, mode: str, *, total_tokens: float | None = None,
              num_seqs: float | None = None, max_len: float | None = None) -> torch.Tensor:
    """Reduce per-token losses to a scalar.

    - ``token-mean``: Σ loss·mask / Σ mask (verl's default; every token weighs the same).
    - ``seq-mean``: mean over sequences of each sequence's token mean (the original GRPO).
    - ``dr-grpo``: Σ loss·mask / (N · max_len), a constant normaliser (Dr.GRPO, Liu et al. 2025).

    For gradient accumulation or data parallelism, pass the *global* ``total_tokens`` /
    ``num_seqs`` so the sum of the micro-batch losses equals the full-batch loss exactly.
    """
    masked = per_token * mask
    if mode == "token-mean":
        denom = total_tokens if total_tokens is not None else mask.sum()
        return masked.sum() / max(float(denom), 1.0)
    if mode == "seq-mean":
        per_seq = masked.sum(dim=1) / mask.sum(dim=1).clamp_min(1)
        n = num_seqs if num_seqs is not None else per_token.shape[0]
        return per_seq.sum() / max(float(n), 1.0)
    if mode == "dr-grpo":
        n = num_seqs if num_seqs is not None else per_token.shape[0]
        length = max_len if max_len is not None else per_token.shape[1]
        return masked.sum() / max(float(n) * float(length), 1.0)
    raise ValueError(f"unknown aggregation {mode!r}; expected one of {AGGREGATIONS}")


def policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.4,
    aggregation: str = "token-mean",
    ref_logp: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    total_tokens: float | None = None,
    num_seqs: float | None = None,
    max_len: float | None = None,
    is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped surrogate with asymmetric clip (DAPO's clip-higher) and optional k3 KL.

    per token: max(−A·ρ, −A·clip(ρ, 1 − clip_low, 1 + clip_high)) + kl_coef · k3, ρ = exp(logp − old).
    ``is_weights`` (per token, no gradient) multiply the surrogate: truncated importance sampling
    (:func:`tis_weights`) when the rollout engine's probabilities are not the trainer's.
    Returns (loss, stats) with the clipped fraction (tokens where the clipped branch is active)
    and the mean KL over real tokens.
    """
    adv = advantages.reshape(-1, 1).to(logp.dtype)
    ratio = torch.exp(logp - old_logp)
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    per_token = torch.maximum(unclipped, clipped)
    if is_weights is not None:
        per_token = per_token * is_weights.to(per_token.dtype)
    stats: dict[str, float] = {}
    n_tok = mask.sum().clamp_min(1)
    with torch.no_grad():
        stats["clip_frac"] = float(((clipped > unclipped).float() * mask).sum() / n_tok)
    if ref_logp is not None:
        kl = k3_kl(logp, ref_logp)
        with torch.no_grad():
            stats["kl"] = float((kl * mask).sum() / n_tok)
        if kl_coef:
            per_token = per_token + kl_coef * kl
    loss = aggregate(per_token, mask, aggregation, total_tokens=total_tokens, num_seqs=num_seqs, max_len=max_len)
    return loss, stats


def tis_weights(logp: torch.Tensor, rollout_logp: torch.Tensor, cap: float) -> torch.Tensor:
    """Truncated importance sampling (Yao et al. 2025, the paper's stack with cap 2.0): the tokens were
    drawn from the rollout engine's π_rollout, the loss is the trainer's π; weight each token by
    min(π / π_rollout, cap), without gradient. Equal engines give weights of exactly 1."""
    return torch.exp(logp.detach() - rollout_logp).clamp(max=cap)
