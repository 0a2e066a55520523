"""GRPO with verifiable rewards over any tinylora parameterization.

Per step: B prompts × G samples (seeded per (run seed, step, prompt, sample)), scored by the
task's own ``score``; group-normalised advantages; clipped policy-gradient loss on the adapter only.

How this departs from textbook GRPO (Shao et al. 2024), each a documented choice:

- No KL term by default (``kl_coef=0``, as in the TinyLoRA paper and DAPO); when enabled it is
  the k3 estimator against the *base model* — the adapter switched off, never a weight copy.
- Asymmetric clipping (DAPO's clip-higher): ρ ∈ [1 − 0.2, 1 + 0.4] by default.
- Token-level aggregation by default (verl/DAPO ``token-mean``), normalised by the token count
  of the whole step, so gradient accumulation gives exactly the full-batch gradient.
- On-policy by default (``num_iterations=1``): old log-probs equal the current ones, ρ = 1 and
  clipping is inactive, as nanochat notes; with ``num_iterations > 1`` the rollout batch is reused
  and old log-probs come from one no-grad pass before the first update.
- Groups whose rewards are all equal carry zero advantage; their sequences are skipped in the
  backward pass (their gradient is exactly zero) but still count in the normaliser.
- Log-probs for the loss are recomputed with the unmerged, differentiable adapter path; the
  rollout itself runs on merged weights. With ``shared_prompt`` the G samples of a prompt share one
  forward of it (:func:`~tinylora.trainers.batch.shared_prompt_logprobs`; off by default: 0.94× on the
  0.5B at GSM8K's prompt and completion lengths, BENCHMARKS.md).
- The rollout engine's per-token log-probs are compared with the loss forward's every step
  (``rollout_lp_gap``: mean |Δ log p|): ≈ 0 with our engine on fp32 weights, larger with vLLM or a
  bf16 base. ``tis_cap`` corrects the gap with truncated importance sampling (off by default).

Under ``torchrun`` each rank takes a contiguous share of the step's prompts (a prompt's G samples
stay together, so advantages are local); token and sequence counts are summed over ranks before
they normalise the loss, and the adapter's gradient is summed (see :mod:`tinylora._core.distributed`).
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from ..adapters.model import disabled
from ..generation.rollout import Rollout
from . import register
from .base import Trainer
from .batch import build_batch, completion_logprobs, shared_prompt_logprobs
from .losses import group_advantages, policy_loss, tis_weights


@register
class GRPOTrainer(Trainer):
    """GRPO (see the module docstring for every departure from the textbook algorithm)."""

    algo = "grpo"
    curve = "reward_mean"
    curve_label = "reward"

    def postfix(self, m: dict[str, Any]) -> dict[str, str]:
        return {"reward": f"{m['reward_mean']:.3f}", "zero_std": f"{m['frac_zero_std']:.2f}"}

    # --- one step -------------------------------------------------------------------------
    def log_completions(self, step: int, chosen: list, ro: Rollout, rewards: list[float]) -> None:
        """Every sample of the step (gathered from all ranks) to ``completions.jsonl``."""
        if not self.cfg.log_completions:
            return
        G = self.cfg.group_size
        mine = [{"step": step, "prompt": j, "sample": s, "reward": rewards[k * G + s], "text": ro.texts[k * G + s]}
                for k, (j, _) in enumerate(chosen) for s in range(G)]
        self.log("completions.jsonl", [r for part in self.dist.gather(mine) for r in part])

    def train_step(self, step: int) -> dict[str, Any]:
        cfg = self.cfg
        t0 = time.time()
        chosen, ro = self.rollout(step)
        refs = [e.answer for _, e in chosen for _ in range(cfg.group_size)]
        reward_list = self.reward(ro.texts, refs) if chosen else []
        rewards = torch.tensor(reward_list, dtype=torch.float32).view(len(chosen), cfg.group_size)
        adv, zero_std = group_advantages(rewards, cfg.scale_std)
        adv = adv.reshape(-1)
        t_rollout = time.time() - t0
        self.log_completions(step, chosen, ro, reward_list)

        lengths = [len(c) for c in ro.completion_ids]
        total_tokens, num_seqs = self.dist.sum([sum(lengths), len(lengths)])  # the whole step's counts
        active = [i for i in range(len(lengths)) if adv[i] != 0 or cfg.kl_coef > 0]
        chunks = [active[i:i + cfg.micro_batch_size] for i in range(0, len(active), cfg.micro_batch_size)]
        pad = self.tokenizer.pad_token_id

        batches = None if cfg.shared_prompt else [
            build_batch([ro.prompt_ids[i] for i in c], [ro.completion_ids[i] for i in c], pad) for c in chunks]

        def forward(k: int) -> tuple[torch.Tensor, torch.Tensor]:
            """(log-probs, mask) of chunk ``k``: each prompt once per group, or its padded batch."""
            if batches is None:
                c = chunks[k]
                return shared_prompt_logprobs(self.model, [ro.prompt_ids[i] for i in c],
                                              [ro.completion_ids[i] for i in c], cfg.temperature)
            return completion_logprobs(self.model, batches[k], cfg.temperature), batches[k].mask

        old = ref = None
        if cfg.num_iterations > 1:
            with torch.no_grad():
                old = [forward(k)[0] for k in range(len(chunks))]
        if cfg.kl_coef > 0:
            with torch.no_grad(), disabled(self.model):
                ref = [forward(k)[0] for k in range(len(chunks))]

        have_lp = bool(ro.logprobs) and all(len(lp) == len(c) for lp, c in zip(ro.logprobs, ro.completion_ids))

        def rollout_lp(k: int, mask: torch.Tensor) -> torch.Tensor:
            """The rollout engine's log-probs of chunk ``k``'s tokens, placed where ``mask`` is 1."""
            out = torch.zeros_like(mask)
            out[mask.bool()] = torch.tensor([x for i in chunks[k] for x in ro.logprobs[i]], dtype=mask.dtype)
            return out

        self.model.train()
        stats = {"clip_frac": 0.0, "kl": 0.0, "loss": 0.0, "lp_gap": 0.0, "lp_gap_max": 0.0, "tis_capped": 0.0}
        grad_norm = 0.0
        for _ in range(cfg.num_iterations):
            self.opt.zero_grad(set_to_none=True)
            for k, c in enumerate(chunks):
                logp, mask = forward(k)
                mask = mask.to(logp.device)
                weights = None
                if have_lp:
                    rl = rollout_lp(k, mask.cpu()).to(logp.device)
                    with torch.no_grad():  # the trainer's log-prob minus the rollout engine's, per token
                        gap = ((logp.detach() - rl) * mask).abs()
                        stats["lp_gap"] += float(gap.sum()) / cfg.num_iterations  # summed; divided below
                        stats["lp_gap_max"] = max(stats["lp_gap_max"], float(gap.max()) if gap.numel() else 0.0)
                    if cfg.tis_cap is not None:
                        weights = tis_weights(logp, rl, cfg.tis_cap) * mask
                        stats["tis_capped"] += float(((weights >= cfg.tis_cap) * mask).sum()) / cfg.num_iterations
                loss, st = policy_loss(
                    logp, old[k] if old is not None else logp.detach(), adv[c], mask,
                    clip_low=cfg.clip_low, clip_high=cfg.clip_high, aggregation=cfg.loss_aggregation,
                    ref_logp=ref[k] if ref is not None else None, kl_coef=cfg.kl_coef,
                    total_tokens=total_tokens, num_seqs=num_seqs, max_len=cfg.max_new_tokens, is_weights=weights)
                loss.backward()
                w = float(mask.sum()) / max(total_tokens, 1.0)
                stats["loss"] += float(loss.detach())
                stats["clip_frac"] += st["clip_frac"] * w / cfg.num_iterations
                stats["kl"] += st.get("kl", 0.0) * w / cfg.num_iterations
            grad_norm = self.optimizer_step(step)

        r = rewards.double().reshape(-1)
        n, r_sum, r_sq, correct, groups, zero, loss, clip, kl = self.dist.sum([
            r.numel(), r.sum(), (r * r).sum(), (r >= 1.0).sum(), zero_std.numel(), zero_std.sum(),
            stats["loss"], stats["clip_frac"], stats["kl"]])
        mean = r_sum / n
        metrics = {
            "step": step, "reward_mean": mean, "reward_std": math.sqrt(max(r_sq - n * mean * mean, 0.0) / (n - 1))
            if n > 1 else 0.0, "accuracy": correct / n, "response_length": total_tokens / num_seqs,
            "frac_zero_std": zero / groups, "clip_frac": clip, "kl": kl, "loss": loss / cfg.num_iterations,
            "grad_norm": grad_norm, "lr": self.lr_at(step), "rollout_tokens": int(total_tokens),

            "rollout_s": round(t_rollout, 3), "step_s": round(time.time() - t0, 3),
        }
        scored = self.dist.sum([sum(lengths[i] for i in active)])[0] if have_lp else 0
        if have_lp and scored:  # mean |log π_train − log π_rollout| over the tokens the loss saw, and its largest
            metrics["rollout_lp_gap"] = self.dist.sum([stats["lp_gap"]])[0] / scored
            metrics["rollout_lp_gap_max"] = stats["lp_gap_max"]
        if cfg.tis_cap is not None and have_lp and scored:  # the share of those tokens whose weight hit the cap
            metrics["tis_capped_share"] = self.dist.sum([stats["tis_capped"]])[0] / scored
        if getattr(self.backend, "sync_report", None):
            metrics.update(self.backend.sync_report())
        metrics.update(self.adapter_values())
        return metrics
