"""Batched text generation with Hugging Face ``generate``: left padding, KV cache, stop at EOS.

Runs on merged weights when the model carries an adapter (no per-token adapter overhead); the base
weights are restored bit for bit afterwards.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from .model import is_attached, merged
from .multi import per_row_active
from .seeding import counter_uniform, key_halves


@dataclass
class Sampling:
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 128


class SeededSampler:
    """A logits processor that samples each row from its own counter-based random stream.

    Row i's t-th token uses the uniform number ``counter_uniform(key(seed_i), t)`` and inverse-CDF
    sampling, so a sample depends only on its seed and the logits — not on batch composition or
    generator state — and the whole batch is sampled in one vectorised call (a per-row
    ``torch.Generator`` loop cost more than the model itself on small models). It returns scores that
    are −inf except at the sampled token, so HF's greedy search "picks" our sample, and records the
    sampled token's log-prob under softmax(scores / T) (top-p applied).
    """

    def __init__(self, seeds: list[int], sampling: Sampling):
        self.hi, self.lo = key_halves(seeds)
        self.sampling = sampling
        self.t = 0
        self._picked: list[torch.Tensor] = []

    @property
    def logprobs(self) -> list[list[float]]:
        if not self._picked:
            return [[] for _ in range(len(self.hi))]
        return torch.stack(self._picked, dim=1).tolist()

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        toks, picked = sample_tokens(scores, self.hi, self.lo, self.t, self.sampling)
        self.t += 1
        self._picked.append(picked.cpu())
        out = torch.full_like(scores, float("-inf"))
        out.scatter_(-1, toks[:, None].to(scores.device), 0.0)
        return out


def sample_tokens(scores: torch.Tensor, hi: torch.Tensor, lo: torch.Tensor, t: int, s: Sampling
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Row i's t-th token from its own stream (key halves hi[i], lo[i]) by inverse-CDF sampling of
    softmax(scores / T) with top-p; returns (tokens (N,), their log-probs (N,)). A pure function of
    (logits, key, t): the rollout engine and the HF logits processor share it."""
    logits = scores.float() / max(s.temperature, 1e-6)
    logp = torch.log_softmax(logits, dim=-1)
    if s.top_p < 1.0:
        sorted_lp, idx = logp.sort(dim=-1, descending=True)
        cum = sorted_lp.exp().cumsum(dim=-1)
        drop = cum - sorted_lp.exp() > s.top_p  # keep the smallest prefix reaching top_p
        sorted_lp = sorted_lp.masked_fill(drop, float("-inf"))
        logp = torch.full_like(logp, float("-inf")).scatter(-1, idx, sorted_lp)
        logp = torch.log_softmax(logp, dim=-1)
    u = counter_uniform(hi, lo, t).to(logp.device)
    cdf = logp.double().exp().cumsum(dim=-1)
    # right=True: the first index whose cdf exceeds u·total, so a zero-probability token
    # (an empty interval) is never picked.
    toks = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True).clamp_max(cdf.shape[-1] - 1)
    return toks.squeeze(-1), logp.gather(-1, toks).squeeze(-1)


def prompt_special_tokens(tokenizer) -> bool:
    """Whether to add the tokenizer's special tokens (BOS) to a prompt: not when a chat template already
    wrote them. One rule for rollouts, evaluation and SFT, so all three see the same prompt tokens."""
    return not bool(getattr(tokenizer, "chat_template", None))


def prepare_tokenizer(tokenizer):
    """Left padding (so every prompt ends where generation starts) and a pad token."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


@dataclass
class Generated:
    prompt_ids: torch.Tensor  # (N, P) left-padded prompts, N = prompts × n (prompt-major)
    prompt_mask: torch.Tensor  # (N, P)
    new_ids: torch.Tensor  # (N, T) generated tokens; padding after EOS
    logprobs: list[list[float]] | None  # sampled tokens' log-probs (sampling only)


ENGINES = ("auto", "tinylora", "static", "hf")


def resolve_engine(model, engine: str) -> str:
    """The decode loop ``engine`` means for ``model``: ``auto`` is ours where it knows the architecture, else hf."""
    from . import engine as eng

    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if engine != "auto":
        return engine
    return "tinylora" if eng.supports(model) else "hf"


@torch.no_grad()
def generate_tokens(model, tokenizer, prompts: list[str], *, n: int = 1, sampling: Sampling | None = None,
                    seeds: list[int] | None = None, engine: str = "auto") -> Generated:
    """Greedy when ``sampling.temperature == 0``; otherwise one seeded generator per sample.

    Each sample draws from its own generator (``seeds``: one per prompt × sample, prompt-major), so
    a sample does not depend on what else is in the batch. ``engine``: ``tinylora`` (our decode
    loop, :mod:`tinylora.engine`), ``static`` (the same loop with static shapes, its decode step a
    CUDA graph on a GPU: :func:`tinylora.engine.decode_static`), ``hf`` (``model.generate``), or
    ``auto`` (ours for the architectures it knows, else HF with one log line); all give the same tokens.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    sampling = sampling or Sampling(temperature=0.0)
    if n > 1 and sampling.temperature <= 0:
        raise ValueError("several samples per prompt need temperature > 0 (greedy samples are identical)")
    prepare_tokenizer(tokenizer)
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=prompt_special_tokens(tokenizer))
    device = next(model.parameters()).device
    ids = enc["input_ids"].repeat_interleave(n, dim=0).to(device)
    mask = enc["attention_mask"].repeat_interleave(n, dim=0).to(device)
    kwargs = dict(max_new_tokens=sampling.max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                  eos_token_id=tokenizer.eos_token_id, do_sample=False, temperature=None, top_p=None, top_k=None)
    sampler = None
    if sampling.temperature > 0:
        from transformers import LogitsProcessorList

        if seeds is None or len(seeds) != len(prompts) * n:
            raise ValueError(f"sampling needs one seed per sample: {len(prompts)} prompts × {n} = "
                             f"{len(prompts) * n}, got {None if seeds is None else len(seeds)}")
        sampler = SeededSampler(seeds, sampling)
        kwargs["logits_processor"] = LogitsProcessorList([sampler])
    # merged weights for speed, unless rows carry their own adapters (tinylora.multi.per_row)
    ctx = merged(model) if is_attached(model) and not per_row_active(model) else contextlib.nullcontext()
    was_training = model.training
    model.eval()
    from . import engine as eng

    use_ours = resolve_engine(model, engine) in ("tinylora", "static")
    try:
        with ctx:
            if use_ours:
                loop = eng.decode_static if engine == "static" else eng.decode
                new, logprobs = loop(model, enc["input_ids"].to(device), enc["attention_mask"].to(device), n=n,
                                           sampling=sampling, seeds=seeds, eos_token_id=tokenizer.eos_token_id,
                                           pad_token_id=tokenizer.pad_token_id)
                return Generated(ids, mask, new, logprobs)
            out = model.generate(input_ids=ids, attention_mask=mask, **kwargs)
    finally:
        model.train(was_training)
    return Generated(ids, mask, out[:, ids.shape[1]:], sampler.logprobs if sampler else None)


def generate_texts(model, tokenizer, prompts: list[str], *, n: int = 1, temperature: float = 0.0,
                   top_p: float = 1.0, max_new_tokens: int = 256, seeds: list[int] | None = None,
                   engine: str = "auto") -> list[list[str]]:
    """``n`` completions per prompt as text, special tokens stripped."""
    g = generate_tokens(model, tokenizer, prompts, n=n, sampling=Sampling(temperature, top_p, max_new_tokens),
                        seeds=seeds, engine=engine)
    texts = tokenizer.batch_decode(g.new_ids, skip_special_tokens=True)
    return [texts[i * n:(i + 1) * n] for i in range(len(prompts))]
