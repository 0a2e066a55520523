"""Supervised fine-tuning on the same parameterizations, prompts, config and run directory as GRPO.

The paper's baseline: SFT needs 100–1000× larger updates than RL for the same accuracy. Two
sources of targets, so the comparison can separate "how dense is the signal" from "whose style":

- ``sft_source="reference"``: the task's reference solutions (:meth:`Task.reference_completion`),
  which differ from the model's own habits as real SFT data does (the toy world's are in a style
  the backbone never saw).
- ``sft_source="rejection"``: the model's own correct samples (rejection-sampling fine-tuning,
  online as in RAFT): each step samples G completions per prompt from the current policy with
  the run's seeded sampler, keeps those the task scores 1, and trains on them. Prompts with no
  correct sample contribute nothing that step.

Loss: cross-entropy on the completion tokens only (prompt tokens are masked), averaged over all
completion tokens of the step, so gradient accumulation over micro-batches gives exactly the
full-batch gradient (the same token-mean normaliser as GRPO's default).
"""

from __future__ import annotations

import time
from typing import Any

import torch

from ..generation.generate import prompt_special_tokens
from . import register
from .base import Trainer
from .batch import Batch, build_batch, completion_logprobs


def sft_loss(model, batch: Batch, total_tokens: float | None = None) -> torch.Tensor:
    """Sum of −log p over the batch's completion tokens / ``total_tokens`` (default: this batch's)."""
    logp = completion_logprobs(model, batch, temperature=1.0)
    mask = batch.mask.to(logp.device)
    denom = float(mask.sum()) if total_tokens is None else total_tokens
    return -(logp * mask).sum() / max(denom, 1.0)


def reference_targets(task, tokenizer, examples) -> tuple[list[list[int]], list[list[int]]]:
    """(prompt ids, completion ids + EOS) for SFT on the task's reference solutions, tokenized as the
    rollouts tokenize prompts."""
    add = prompt_special_tokens(tokenizer)
    p_ids = [tokenizer(task.prompt(e, tokenizer), add_special_tokens=add)["input_ids"] for e in examples]
    c_ids = [tokenizer(task.reference_completion(e), add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
             for e in examples]
    return p_ids, c_ids


@register
class SFTTrainer(Trainer):
    algo = "sft"
    curve = "loss"

    def postfix(self, m: dict[str, Any]) -> dict[str, str]:
        out = {"loss": f"{m['loss']:.4f}"}
        if "kept" in m:
            out["kept"] = f"{m['kept']:.2f}"
        return out

    def targets(self, step: int) -> tuple[list[list[int]], list[list[int]], list[float] | None]:
        """(prompt ids, completion ids, sampled rewards or None) to train on at this step, for this
        rank's prompts; completions end in EOS unless a sampled one ran out of tokens."""
        cfg = self.cfg
        chosen = self.my_examples(step)
        if cfg.sft_source == "reference":
            return (*reference_targets(self.task, self.tokenizer, [e for _, e in chosen]), None)
        if not chosen:  # more ranks than prompts: nothing to sample on this rank
            return [], [], []
        chosen, ro = self.rollout(step)
        refs = [e.answer for _, e in chosen for _ in range(cfg.group_size)]
        rewards = self.reward(ro.texts, refs)
        keep = [i for i, r in enumerate(rewards) if r >= 1.0]  # trained on exactly the sampled tokens
        return [list(ro.prompt_ids[i]) for i in keep], [list(ro.completion_ids[i]) for i in keep], rewards

    def train_step(self, step: int) -> dict[str, Any]:
        cfg = self.cfg
        t0 = time.time()
        p_ids, c_ids, rewards = self.targets(step)
        # the normaliser is the whole step's token count, summed over ranks
        total, seqs, r_sum, r_n = self.dist.sum([sum(len(c) for c in c_ids), len(c_ids), sum(rewards or []),
                                                 len(rewards or [])])
        self.model.train()
        self.opt.zero_grad(set_to_none=True)
        loss_sum = 0.0
        for i in range(0, len(c_ids), cfg.micro_batch_size):
            b = build_batch(p_ids[i:i + cfg.micro_batch_size], c_ids[i:i + cfg.micro_batch_size],
                            self.tokenizer.pad_token_id)
            loss = sft_loss(self.model, b, total_tokens=total)
            loss.backward()
            loss_sum += float(loss.detach())
        grad_norm = self.optimizer_step(step) if total > 0 else 0.0
        (loss_sum,) = self.dist.sum([loss_sum])
        metrics = {"step": step, "loss": loss_sum, "tokens": int(total), "sequences": int(seqs),
                   "grad_norm": grad_norm, "lr": self.lr_at(step), "step_s": round(time.time() - t0, 3)}
        if rewards is not None:
            metrics.update(reward_mean=r_sum / max(r_n, 1), kept=seqs / max(r_n, 1))
        metrics.update(self.adapter_values())
        return metrics

