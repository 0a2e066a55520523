"""Prompt + completion sequences as one left-padded batch, and the completion tokens' log-probs under
the model: what every gradient-based trainer computes its loss on."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..models.loading import contiguous_head_input
from .losses import token_logprobs


@dataclass
class Batch:
    """Left-padded prompt+completion sequences whose completions end at the right edge."""

    input_ids: torch.Tensor  # (n, L)
    attention_mask: torch.Tensor  # (n, L)
    position_ids: torch.Tensor  # (n, L)
    targets: torch.Tensor  # (n, K): the last K tokens
    mask: torch.Tensor  # (n, K): 1 on completion tokens


def build_batch(prompt_ids: list[list[int]], completion_ids: list[list[int]], pad_id: int) -> Batch:
    seqs = [p + c for p, c in zip(prompt_ids, completion_ids)]
    L = max(len(s) for s in seqs)
    K = max(max(len(c) for c in completion_ids), 1)
    n = len(seqs)
    ids = torch.full((n, L), pad_id, dtype=torch.long)
    att = torch.zeros((n, L), dtype=torch.long)
    mask = torch.zeros((n, K))
    for i, (s, c) in enumerate(zip(seqs, completion_ids)):
        ids[i, L - len(s):] = torch.tensor(s)
        att[i, L - len(s):] = 1
        mask[i, K - len(c):] = 1
    pos = (att.cumsum(-1) - 1).clamp_min(0)  # as generate computes them under left padding
    return Batch(ids, att, pos, ids[:, L - K:], mask)


# architectures whose logits are exactly ``lm_head(decoder(x))`` (no soft-capping or scaling after the head)
PLAIN_HEAD = ("llama", "qwen2", "qwen3", "mistral")
HEAD_CHUNK_ROWS = 256  # positions per chunk of the head: 256 × 151,936 fp32 logits are 156 MB


class _HeadLogprobs(torch.autograd.Function):
    """log p(target) through a frozen output head, ``chunk`` positions at a time, forward and backward.

    The plain path makes the (n, K, V) logits at once and keeps them for backward: at 8 completions of
    257 positions and Qwen2.5's 151,936 words that is 1.25 GB in fp32, with its bf16 original, the
    softmax and the gradient beside it. Here each chunk's logits live only inside the loop and are
    recomputed in backward (one more head matmul over the completions), and only the hidden states are
    kept. The math is the plain path's (``picked − logsumexp``; backward ``g · (onehot − exp(x − lse))``
    through the same dtypes), so the values agree to rounding (tested to 1e-5 in fp32)."""

    @staticmethod
    def forward(ctx, h, weight, targets, temperature: float, chunk: int):
        flat, t = h.reshape(-1, h.shape[-1]), targets.reshape(-1)
        out = torch.empty(flat.shape[0], dtype=torch.float32, device=h.device)
        for s in range(0, flat.shape[0], chunk):
            lg = torch.nn.functional.linear(flat[s:s + chunk], weight).float()
            if temperature != 1.0:
                lg = lg / temperature
            out[s:s + chunk] = lg.gather(-1, t[s:s + chunk, None]).squeeze(-1) - torch.logsumexp(lg, dim=-1)
        ctx.save_for_backward(h, weight, targets)
        ctx.temperature, ctx.chunk = temperature, chunk
        return out.view(targets.shape)

    @staticmethod
    def backward(ctx, g):
        h, weight, targets = ctx.saved_tensors
        flat, t, gf = h.reshape(-1, h.shape[-1]), targets.reshape(-1), g.reshape(-1).float()
        grad = torch.empty_like(flat)
        for s in range(0, flat.shape[0], ctx.chunk):
            lg = torch.nn.functional.linear(flat[s:s + ctx.chunk], weight).float()
            if ctx.temperature != 1.0:
                lg = lg / ctx.temperature
            gc = gf[s:s + ctx.chunk, None]
            d = torch.exp(lg - torch.logsumexp(lg, dim=-1, keepdim=True)).mul_(-gc)
            d.scatter_add_(-1, t[s:s + ctx.chunk, None], gc)
            if ctx.temperature != 1.0:
                d = d / ctx.temperature
            grad[s:s + ctx.chunk] = d.to(weight.dtype) @ weight
        return grad.view_as(h), None, None, None, None


def _chunkable_head(model):
    """The output head when the chunked path applies: a known architecture, a plain frozen linear head."""
    if getattr(getattr(model, "config", None), "model_type", "") not in PLAIN_HEAD or not hasattr(model, "get_decoder"):
        return None
    head = model.get_output_embeddings()
    if type(head) is not torch.nn.Linear or head.bias is not None or head.weight.requires_grad:
        return None
    return head


def completion_logprobs(model, batch: Batch, temperature: float, chunk_rows: int | None = None) -> torch.Tensor:
    """(n, K) log-probs of the completion tokens; logits only for the last K + 1 positions, made
    ``chunk_rows`` positions at a time where the architecture allows (:class:`_HeadLogprobs`; 0: at once)."""
    K = batch.targets.shape[1]
    contiguous_head_input(model)  # the logits_to_keep slice below (idempotent)
    device = next(model.parameters()).device
    kwargs = dict(input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device),
                  position_ids=batch.position_ids.to(device), use_cache=False)
    chunk = HEAD_CHUNK_ROWS if chunk_rows is None else chunk_rows
    head = _chunkable_head(model) if chunk > 0 else None
    if head is not None:
        hidden = model.get_decoder()(**kwargs).last_hidden_state[:, -(K + 1):-1]
        return _HeadLogprobs.apply(hidden, head.weight, batch.targets.to(device), float(temperature), chunk)
    try:
        logits = model(**kwargs, logits_to_keep=K + 1).logits
    except TypeError:  # models without logits_to_keep
        logits = model(**kwargs).logits[:, -(K + 1):]
    return token_logprobs(logits[:, :-1], batch.targets.to(device), temperature)


def shared_prompt_logprobs(model, prompt_ids: list[list[int]], completion_ids: list[list[int]],
                           temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The (n, K) completion log-probs and mask of :func:`build_batch`'s layout, with each prompt run
    once for the consecutive samples that share it (a GRPO group) instead of once per sample.

    The prompt's keys and values are computed with gradients and repeated for its samples, so the
    loss and the adapter's gradient equal the unshared forward's (to fp32 rounding; tested to 1e-5):
    a group of G samples pays for its prompt once, and no row is padded to another prompt's length.
    The first completion token is predicted by the prompt's last position, the others by the
    completion's own positions; logits are never computed for prompt positions.
    """
    from transformers import DynamicCache

    from ..generation.engine import cache_kwarg

    contiguous_head_input(model)
    ckw = cache_kwarg(model)
    device = next(model.parameters()).device
    n = len(completion_ids)
    K = max(max((len(c) for c in completion_ids), default=1), 1)
    out = torch.zeros((n, K), device=device)
    mask = torch.zeros((n, K))
    i = 0
    while i < n:
        j = i
        while j < n and prompt_ids[j] == prompt_ids[i]:
            j += 1
        p, comps = prompt_ids[i], completion_ids[i:j]
        g, Kc, Lp = j - i, max(len(c) for c in comps), len(p)
        cache = DynamicCache()
        head = model(input_ids=torch.tensor([p], device=device), use_cache=True, logits_to_keep=1,
                     **{ckw: cache})
        logits = [head.logits[:, -1:].expand(g, 1, -1)]
        if Kc > 1:
            cache.batch_repeat_interleave(g)
            ids = torch.full((g, Kc - 1), 0, dtype=torch.long)
            for r, c in enumerate(comps):
                ids[r, : len(c) - 1] = torch.tensor(c[:-1], dtype=torch.long)
            pos = torch.arange(Lp, Lp + Kc - 1).expand(g, -1)
            # right padding: a pad comes after every real token of its row, so causal attention never
            # lets a real token see one, and the pads' own outputs are never read
            att = torch.ones((g, Lp + Kc - 1), dtype=torch.long)
            tail = model(input_ids=ids.to(device), attention_mask=att.to(device), position_ids=pos.to(device),
                         use_cache=True, **{ckw: cache})
            logits.append(tail.logits)
        targets = torch.zeros((g, Kc), dtype=torch.long)
        for r, c in enumerate(comps):
            targets[r, : len(c)] = torch.tensor(c, dtype=torch.long)
        lp = token_logprobs(torch.cat(logits, dim=1), targets.to(device), temperature)
        for r, c in enumerate(comps):
            out[i + r, K - len(c):] = lp[r, : len(c)]
            mask[i + r, K - len(c):] = 1
        i = j
    return out, mask
