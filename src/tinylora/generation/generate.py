"""Batched text generation with Hugging Face ``generate``: left padding, KV cache, stop at EOS.

Runs on merged weights when the model carries an adapter (no per-token adapter overhead); the base
weights are restored bit for bit afterwards.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from ..adapters.model import adapted_modules, is_attached, merged
from ..adapters.multi import per_row_active
from ..models.loading import contiguous_head_input
from . import ENGINES
from .sampling import Sampling, SeededSampler, sample_tokens  # noqa: F401  (sample_tokens: part of this API)


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
    loop, :mod:`tinylora.generation.engine`), ``static`` (the same loop with static shapes, its decode step a
    CUDA graph on a GPU: :func:`tinylora.generation.engine.decode_static`), ``hf`` (``model.generate``), or
    ``auto`` (ours for the architectures it knows, else HF with one log line); all give the same tokens.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    sampling = sampling or Sampling(temperature=0.0)
    if n > 1 and sampling.temperature <= 0:
        raise ValueError("several samples per prompt need temperature > 0 (greedy samples are identical)")
    prepare_tokenizer(tokenizer)
    contiguous_head_input(model)  # a model not loaded by load_model (idempotent)
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
    if engine == "vllm":
        return _generate_vllm(model, tokenizer, enc, ids, mask, n=n, sampling=sampling, seeds=seeds)
    # merged weights for speed, unless rows carry their own adapters (tinylora.adapters.multi.per_row),
    # the adapter is switched off (adapters.model.disabled: merging would switch it back on), or the base
    # is bf16/fp16, where W + ΔW rounds a tiny update away (the fp32 adapter path keeps it)
    mods = adapted_modules(model).values() if is_attached(model) else ()
    merge_ok = (is_attached(model) and not per_row_active(model) and not any(m.disabled for m in mods)
                and all(m.base_layer.weight.dtype == torch.float32 for m in mods))
    ctx = merged(model) if merge_ok else contextlib.nullcontext()
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


def _generate_vllm(model, tokenizer, enc, ids, mask, *, n, sampling, seeds) -> Generated:
    """The same call through vLLM (:mod:`tinylora.generation.vllm_engine`): the model's adapter state (its
    own values, or the per-row table of a population) synced as LoRAs, one request per sample."""
    from . import vllm_engine

    from ..adapters.multi import active_state

    prompts = [row[m.bool()].tolist() for row, m in zip(enc["input_ids"], enc["attention_mask"])]
    rows = [p for p in prompts for _ in range(n)]
    state = active_state(model)  # a population: as many LoRAs in the batch as it has members
    eng = vllm_engine.engine_for(model, max_new_tokens=sampling.max_new_tokens,
                                 prompt_len=max((len(p) for p in prompts), default=1),
                                 max_loras=len(set(state.rows.tolist())) if state is not None else 1)
    loras = eng.loras_for(model, len(rows))
    out, lps = eng.generate(rows, loras, temperature=sampling.temperature, top_p=sampling.top_p,
                            max_new_tokens=sampling.max_new_tokens, seeds=seeds, eos_token_id=tokenizer.eos_token_id)
    T = max((len(o) for o in out), default=0)
    new = torch.full((len(out), T), tokenizer.pad_token_id, dtype=torch.long)
    for i, o in enumerate(out):
        new[i, :len(o)] = torch.tensor(o, dtype=torch.long)
    logprobs = [lp + [0.0] * (T - len(lp)) for lp in lps] if sampling.temperature > 0 else None
    return Generated(ids, mask, new.to(ids.device), logprobs)


def generate_texts(model, tokenizer, prompts: list[str], *, n: int = 1, temperature: float = 0.0,
                   top_p: float = 1.0, max_new_tokens: int = 256, seeds: list[int] | None = None,
                   engine: str = "auto") -> list[list[str]]:
    """``n`` completions per prompt as text, special tokens stripped."""
    g = generate_tokens(model, tokenizer, prompts, n=n, sampling=Sampling(temperature, top_p, max_new_tokens),
                        seeds=seeds, engine=engine)
    texts = tokenizer.batch_decode(g.new_ids, skip_special_tokens=True)
    return [texts[i * n:(i + 1) * n] for i in range(len(prompts))]
