"""Rollout backends: generate completions for the trainer behind one small interface.

    backend.generate(prompts, n, sampling, seeds) -> Rollout   # token ids, texts, sampling log-probs
    backend.update(model)                                      # new adapter values (a no-op for HF)

The local backend runs our decode loop (or ``model.generate``) on merged weights (no adapter overhead; the base
bytes are restored exactly afterwards). Every sample has its own seed — the trainer derives it from
(run seed, step, prompt, sample) — and draws its tokens from its own generator, so a completion
does not depend on what else is in the batch. Other engines (vLLM) implement the same two methods.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from .generate import Sampling, generate_tokens, prepare_tokenizer


@dataclass
class Rollout:
    prompt_ids: list[list[int]]  # per sample (prompts repeated n times, prompt-major)
    completion_ids: list[list[int]]  # up to and including EOS; no padding
    texts: list[str]  # decoded completions, special tokens removed
    logprobs: list[list[float]]  # log-prob of each completion token under the sampling distribution


class RolloutBackend(Protocol):
    def generate(self, prompts: list[str], n: int, sampling: Sampling, seeds: list[int]) -> Rollout: ...

    def update(self, model) -> None: ...


class LocalBackend:
    """Generation in this process on merged weights: our decode loop (``engine="tinylora"``, the
    default for the architectures it knows) or ``transformers`` generate (``engine="hf"``); both give
    the same tokens (tested). Left padding, KV cache, stop at EOS."""

    def __init__(self, model, tokenizer, engine: str = "auto"):
        self.model = model
        self.tokenizer = prepare_tokenizer(tokenizer)
        self.engine = engine

    def update(self, model) -> None:
        self.model = model  # shares the trainer's model: nothing to copy

    def sync_report(self) -> dict[str, float]:
        """With vLLM: the bytes (and LoRAs) synced to it since the last report — the adapter's factors,
        never merged weights; else nothing (our engine reads the trainer's weights in place)."""
        if self.engine != "vllm":
            return {}
        from . import vllm_engine

        engines = list(vllm_engine._ENGINES.values())
        total, syncs = sum(e.synced_bytes for e in engines), sum(e.syncs for e in engines)
        last = getattr(self, "_last", (0, 0))
        self._last = (total, syncs)
        return {"sync_bytes": total - last[0], "sync_loras": syncs - last[1]}

    def generate(self, prompts: list[str], n: int, sampling: Sampling, seeds: list[int]) -> Rollout:
        tok = self.tokenizer
        g = generate_tokens(self.model, tok, prompts, n=n, sampling=sampling, seeds=seeds, engine=self.engine)
        prompt_ids, completion_ids, logprobs = [], [], []
        for i, row in enumerate(g.new_ids.tolist()):
            cut = row.index(tok.eos_token_id) + 1 if tok.eos_token_id in row else len(row)
            completion_ids.append(row[:cut])
            logprobs.append(g.logprobs[i][:cut] if g.logprobs else [])
            prompt_ids.append(g.prompt_ids[i][g.prompt_mask[i].bool()].tolist())
        texts = tok.batch_decode(completion_ids, skip_special_tokens=True)
        return Rollout(prompt_ids, completion_ids, texts, logprobs)
