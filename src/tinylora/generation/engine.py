"""The rollout engine: a decode loop written for rollouts and evaluation, beside HF ``generate``.

What it does that ``generate`` does not, for this workload:

- each prompt is prefilled once and its KV cache shared by its n samples (repeated after prefill);
  on a bf16/fp16 base, in up to four groups of similar length, each padded only to its own longest;
- finished rows leave the batch: their cache rows are dropped, so a batch costs its *live* rows,
  not its longest row times all rows (on the toy world most rows stop early);
- logits only for the position sampled, and a bare loop (no logits-processor or stopping-criteria
  machinery) around the model's own forward — the model code, attention masks and cache are the
  model's, so any architecture whose forward takes ``position_ids``, ``past_key_values`` and
  ``logits_to_keep`` with a ``DynamicCache`` works.

:func:`decode_static` is the same loop with static shapes (a ``StaticCache`` of prompt + new tokens,
a full-length attention mask, no compaction), so that on a CUDA device its decode step can be
captured once as a CUDA graph (``torch.compile(mode="reduce-overhead")``) and replayed every token.
On CPU it runs eagerly (tested for exactness there); the GPU path is unverified until a GPU run.

Exactness is kept by construction and tested against ``generate``: greedy is the same argmax,
sampling is the same counter-based per-row stream (:func:`tinylora.generation.sampling.sample_tokens`), and
rows never interact (left padding is masked; positions from the attention mask, as ``generate``
computes them). Per-row adapters (:func:`tinylora.adapters.multi.per_row`) follow the compaction.
"""

from __future__ import annotations

import logging

import torch

from .._core.seeding import key_halves
from .packed import packed
from .sampling import Sampling, greedy_tokens, sample_tokens

log = logging.getLogger(__name__)

# model_type values whose forward is known to work with this loop (tested: llama, qwen2, gpt2)
KNOWN = ("llama", "qwen2", "gpt2", "mistral", "qwen3")
_warned: set[str] = set()
# compact the batch when its live rows fall to this share: each compaction copies the KV cache, so
# finished rows ride along (fed their EOS, outputs ignored) until a quarter of the batch is done
COMPACT_AT = 0.75


def supports(model) -> bool:
    """Whether the engine knows this architecture; logs once per type when it does not."""
    kind = getattr(getattr(model, "config", None), "model_type", "")
    if kind in KNOWN:
        return True
    if kind not in _warned:
        _warned.add(kind)
        log.warning("rollout engine: model type %r is not one it knows; using Hugging Face generate", kind)
    return False


def _preallocated_cache(capacity: int):
    """A ``DynamicCache`` whose layers write into buffers of ``capacity`` positions allocated at the
    first update, instead of concatenating a new tensor every step (measured: the concatenations
    were a fifth of the toy world's decode time)."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    class PreallocatedLayer(DynamicLayer):
        def lazy_initialization(self, key_states, value_states):
            super().lazy_initialization(key_states, value_states)
            self.length = 0
            self._k = self._v = None

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            q = key_states.shape[-2]
            if self._k is None:
                B, H, _, D = key_states.shape
                self._k = key_states.new_empty(B, H, max(capacity, q), D)
                self._v = value_states.new_empty(B, value_states.shape[1], max(capacity, q), value_states.shape[-1])
            if self.length + q > self._k.shape[-2]:
                raise RuntimeError(f"preallocated KV cache of {self._k.shape[-2]} positions overflowed")
            self._k[:, :, self.length:self.length + q] = key_states
            self._v[:, :, self.length:self.length + q] = value_states
            self.length += q
            self.keys, self.values = self._k[:, :, :self.length], self._v[:, :, :self.length]
            return self.keys, self.values

        def get_seq_length(self) -> int:
            return self.length if self.is_initialized else 0

        def batch_repeat_interleave(self, repeats: int) -> None:
            if self.get_seq_length() > 0:
                self._k, self._v = self._k.repeat_interleave(repeats, 0), self._v.repeat_interleave(repeats, 0)
                self.keys, self.values = self._k[:, :, :self.length], self._v[:, :, :self.length]

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            if self.get_seq_length() > 0:
                k = self._k.new_empty(len(indices), *self._k.shape[1:])
                v = self._v.new_empty(len(indices), *self._v.shape[1:])
                k[:, :, :self.length] = self._k[indices, :, :self.length]  # only the filled positions
                v[:, :, :self.length] = self._v[indices, :, :self.length]
                self._k, self._v = k, v
                self.keys, self.values = k[:, :, :self.length], v[:, :, :self.length]

    cache = DynamicCache()
    cache.layer_class_to_replicate = PreallocatedLayer
    cache.layers = []
    return cache


# the prefill in groups of similar prompt length, each padded to its own longest (bf16/fp16 bases only: the
# fp32 loop is tested token for token against ``generate``, whose one batch pads every prompt to the longest)
BUCKET_DTYPES = (torch.bfloat16, torch.float16)
PREFILL_GROUPS = 4  # at most
PREFILL_MIN_ROWS = 8  # rows a group has at least: smaller matmuls lose what the padding saved
PREFILL_MIN_SAVING = 0.2  # group only when that removes at least this share of the padded positions


def _prefill_groups(mask: torch.Tensor, dtype: torch.dtype) -> list[torch.Tensor] | None:
    """Rows of a left-padded batch in groups of similar length (sorted, equal counts), or None for one batch.

    Measured (Qwen2.5-Coder-0.5B, 64 GSM8K prompts): 6,657 prompt tokens padded to 64 × 172 = 11,008
    positions — 40% of the prefill's matmul work was padding."""
    B, P = mask.shape
    k = min(PREFILL_GROUPS, B // PREFILL_MIN_ROWS)
    if dtype not in BUCKET_DTYPES or k < 2:
        return None
    L = mask.sum(1)
    groups = list(torch.argsort(L, stable=True).tensor_split(k))
    width = [int(L[g].max()) for g in groups]
    if sum(len(g) * w for g, w in zip(groups, width)) > (1 - PREFILL_MIN_SAVING) * B * P:
        return None
    if any(int(mask[g, P - w:].sum()) != int(L[g].sum()) for g, w in zip(groups, width)):
        return None  # not left-padded: trimming the leading columns would cut real tokens
    return groups


def _grouped_prefill(model, ids, mask, pos, groups, capacity: int, ckw: str, set_rows=None):
    """The prefill of each group on its own columns, merged into one cache of the whole batch's width.

    A row's keys and values land at the same positions as in one padded batch; the positions a group
    did not compute are zeros, masked out as padding. Returns (last-position logits (B, V), cache)."""
    B, P = ids.shape
    logits, merged = None, None
    for g in groups:
        w = int(mask[g].sum(1).max())
        if set_rows is not None:
            set_rows(g)
        cache = _preallocated_cache(w)
        out = model(input_ids=ids[g, P - w:], attention_mask=mask[g, P - w:], position_ids=pos[g, P - w:],
                    use_cache=True, logits_to_keep=1, **{ckw: cache})
        cache = returned_cache(out, cache)
        last = out.logits[:, -1]
        if logits is None:
            logits = last.new_empty(B, last.shape[-1])
            merged = [(layer.keys.new_zeros(B, *layer.keys.shape[1:2], P, layer.keys.shape[-1]),
                       layer.values.new_zeros(B, *layer.values.shape[1:2], P, layer.values.shape[-1]))
                      for layer in cache.layers]
        logits[g] = last
        for (k, v), layer in zip(merged, cache.layers):
            k[g, :, P - w:] = layer.keys
            v[g, :, P - w:] = layer.values
    full = _preallocated_cache(capacity)
    for i, (k, v) in enumerate(merged):
        full.layers.append(full.layer_class_to_replicate())
        full.layers[i].update(k, v)
    return logits, full


def returned_cache(out, cache):
    """The KV cache a forward returned (as ``cache`` or ``past_key_values``), else the one passed in."""
    returned = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
    return returned if returned is not None else cache


def cache_kwarg(model) -> str:
    """``cache`` in newer transformers, ``past_key_values`` before (and in models not yet renamed)."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _stream_keys(seeds: list[int] | None, N: int):
    """The per-sample sampling keys; sampling needs exactly one seed per row."""
    if seeds is None or len(seeds) != N:
        raise ValueError(f"sampling needs one seed per sample ({N}), got {None if seeds is None else len(seeds)}")
    return key_halves(seeds)


@torch.no_grad()
def decode(model, ids: torch.Tensor, mask: torch.Tensor, *, n: int = 1, sampling: Sampling | None = None,
           seeds: list[int] | None = None, eos_token_id: int | None = None, pad_token_id: int = 0
           ) -> tuple[torch.Tensor, list[list[float]] | None]:
    """Generate for left-padded prompts ``ids`` (B, P); returns (new tokens (B·n, T), prompt-major,
    padded after EOS; sampled tokens' log-probs per row (padded with 0.0), or None when greedy).

    A bf16 base decodes with its linear weights pre-packed for oneDNN (:mod:`.packed`: matmuls 1.2–2×
    faster at a decode batch, equal to bf16 rounding), packed for this call unless the caller keeps them packed."""
    with packed(model, batch_size=ids.shape[0] * n):
        return _decode(model, ids, mask, n=n, sampling=sampling, seeds=seeds, eos_token_id=eos_token_id,
                       pad_token_id=pad_token_id)


def _decode(model, ids, mask, *, n, sampling, seeds, eos_token_id, pad_token_id):
    from ..adapters.multi import active_state

    sampling = sampling or Sampling(temperature=0.0)
    greedy = sampling.temperature <= 0
    device = ids.device
    B = ids.shape[0]
    N = B * n
    state = active_state(model)
    full_rows = state.rows.clone() if state is not None else None
    if full_rows is not None and full_rows.shape[0] != N:
        raise ValueError(f"per-row adapters are set for {full_rows.shape[0]} rows; this batch has {N}")
    if state is not None and n > 1 and not bool((full_rows.view(B, n) == full_rows.view(B, n)[:, :1]).all()):
        # a prompt's samples run different adapters: their prefills differ, so prefill every row
        ids, mask, B, n = ids.repeat_interleave(n, 0), mask.repeat_interleave(n, 0), N, 1
    if not greedy:
        hi, lo = _stream_keys(seeds, N)
    try:
        pos = (mask.cumsum(-1) - 1).clamp_min(0)
        if state is not None:
            state.use_table_rows(full_rows[::n])  # the prefill batch: one row per prompt (its samples share it)
        ckw = cache_kwarg(model)
        groups = _prefill_groups(mask, next(model.parameters()).dtype)
        if groups is not None:
            set_rows = (lambda g: state.use_table_rows(full_rows[::n][g])) if state is not None else None
            logits, cache = _grouped_prefill(model, ids, mask, pos, groups, ids.shape[1] + sampling.max_new_tokens,
                                             ckw, set_rows)
            if state is not None:
                state.use_table_rows(full_rows[::n])
        else:
            cache = _preallocated_cache(ids.shape[1] + sampling.max_new_tokens)
            out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1,
                        **{ckw: cache})
            cache = returned_cache(out, cache)
            logits = out.logits[:, -1]
        logits = logits if greedy else logits.float()
        next_pos = pos[:, -1] + 1
        if n > 1:
            cache.batch_repeat_interleave(n)
            logits, mask, next_pos = (x.repeat_interleave(n, 0) for x in (logits, mask, next_pos))
        if state is not None:
            state.use_table_rows(full_rows)
        batch = torch.arange(N, device=device)  # which output row each batch row is
        alive = torch.ones(N, dtype=torch.bool, device=device)  # finished rows stay until the next compaction
        T = sampling.max_new_tokens
        tokens = torch.full((N, T), pad_token_id, dtype=torch.long, device=device)
        logps = torch.zeros((N, T), dtype=torch.float32) if not greedy else None
        steps = 0
        for t in range(T):
            rows = batch[alive]
            if greedy:
                tok = greedy_tokens(logits)  # = argmax(-1), exactly; faster on a large vocabulary
            else:
                tok, lp = sample_tokens(logits, hi[batch.cpu()], lo[batch.cpu()], t, sampling)
                tok = tok.to(device)
                logps[rows.cpu(), t] = lp[alive.cpu()]
            tokens[rows, t] = tok[alive]
            steps = t + 1
            if eos_token_id is not None:
                alive = alive & (tok != eos_token_id)
            n_alive = int(alive.sum())
            if t == T - 1 or n_alive == 0:
                break
            if n_alive <= COMPACT_AT * alive.numel():  # drop the finished rows from the batch and the cache
                idx = alive.nonzero().squeeze(1)
                cache.batch_select_indices(idx)
                batch, mask, next_pos, tok, alive = batch[idx], mask[idx], next_pos[idx], tok[idx], alive[idx]
                if state is not None:
                    state.use_table_rows(full_rows[batch.cpu()])
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], 1)
            out = model(input_ids=tok[:, None], attention_mask=mask, position_ids=next_pos[:, None], use_cache=True,
                        logits_to_keep=1, **{ckw: cache})
            cache = returned_cache(out, cache)
            logits = out.logits[:, -1] if greedy else out.logits[:, -1].float()
            next_pos = next_pos + 1
    finally:
        if state is not None:
            state.use_table_rows(full_rows)
    lp_list = logps[:, :steps].tolist() if logps is not None else None
    return tokens[:, :steps], lp_list


def _decode_step(model, graphs: bool):
    """The model's forward for one token per row; on CUDA with ``graphs``, compiled with
    ``mode="reduce-overhead"`` (CUDA graphs: one capture per batch shape, then replays). The compiled
    step lives in the model's ``__dict__`` (not as a submodule: it must not enter ``state_dict``), so
    it is made once per model and freed with it."""
    if not graphs:
        return model
    step = model.__dict__.get("_tinylora_graphed_step")
    if step is None:
        step = torch.compile(model, mode="reduce-overhead", dynamic=False)
        object.__setattr__(model, "_tinylora_graphed_step", step)
    return step


@torch.no_grad()
def decode_static(model, ids: torch.Tensor, mask: torch.Tensor, *, n: int = 1, sampling: Sampling | None = None,
                  seeds: list[int] | None = None, eos_token_id: int | None = None, pad_token_id: int = 0,
                  graphs: bool | None = None) -> tuple[torch.Tensor, list[list[float]] | None]:
    """:func:`decode` with static shapes: every row is prefilled (prompts repeated ``n`` times), the
    cache holds prompt + ``max_new_tokens`` positions and the mask is that long from the start (new
    positions switched on as they are written), and finished rows stay in the batch (fed their last
    token, outputs ignored) until all are done. ``graphs`` (default: on a CUDA device) captures the
    decode step as a CUDA graph. Same tokens and log-probs as :func:`decode` and ``generate``."""
    from transformers import StaticCache

    from ..adapters.multi import active_state

    sampling = sampling or Sampling(temperature=0.0)
    greedy = sampling.temperature <= 0
    device = ids.device
    graphs = device.type == "cuda" if graphs is None else graphs
    if graphs and device.type != "cuda":
        raise ValueError("CUDA graphs need a CUDA device; this batch is on " + device.type)
    ids, mask = ids.repeat_interleave(n, 0), mask.repeat_interleave(n, 0)
    N, P = ids.shape
    T = sampling.max_new_tokens
    state = active_state(model)
    if state is not None and state.rows.shape[0] != N:
        raise ValueError(f"per-row adapters are set for {state.rows.shape[0]} rows; this batch has {N}")
    if not greedy:
        hi, lo = _stream_keys(seeds, N)
    cache = StaticCache(config=model.config, max_cache_len=P + T)
    ckw = cache_kwarg(model)
    full = torch.zeros(N, P + T, dtype=mask.dtype, device=device)
    full[:, :P] = mask
    pos = (mask.cumsum(-1) - 1).clamp_min(0)
    out = model(input_ids=ids, attention_mask=full, position_ids=pos, use_cache=True, logits_to_keep=1, **{ckw: cache})
    logits = out.logits[:, -1] if greedy else out.logits[:, -1].float()
    next_pos = pos[:, -1:] + 1
    step = _decode_step(model, graphs)
    alive = torch.ones(N, dtype=torch.bool, device=device)
    tokens = torch.full((N, T), pad_token_id, dtype=torch.long, device=device)
    logps = torch.zeros((N, T), dtype=torch.float32) if not greedy else None
    rows = torch.arange(N)
    steps = 0
    for t in range(T):
        if greedy:
            tok = greedy_tokens(logits)  # = argmax(-1), exactly; faster on a large vocabulary
        else:
            tok, lp = sample_tokens(logits, hi, lo, t, sampling)
            tok = tok.to(device)
            live = alive.cpu()
            logps[rows[live], t] = lp[live]
        tokens[alive, t] = tok[alive]
        steps = t + 1
        if eos_token_id is not None:
            alive = alive & (tok != eos_token_id)
        if t == T - 1 or not bool(alive.any()):
            break
        full[:, P + t] = 1
        out = step(input_ids=tok[:, None], attention_mask=full, position_ids=next_pos, use_cache=True,
                   logits_to_keep=1, **{ckw: cache})
        logits = out.logits[:, -1] if greedy else out.logits[:, -1].float()
        next_pos = next_pos + 1
    lp_list = logps[:, :steps].tolist() if logps is not None else None
    return tokens[:, :steps], lp_list
