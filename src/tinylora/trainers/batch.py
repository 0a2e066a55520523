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


def completion_logprobs(model, batch: Batch, temperature: float) -> torch.Tensor:
    """(n, K) log-probs of the completion tokens; logits only for the last K + 1 positions."""
    K = batch.targets.shape[1]
    contiguous_head_input(model)  # the logits_to_keep slice below (idempotent)
    device = next(model.parameters()).device
    kwargs = dict(input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device),
                  position_ids=batch.position_ids.to(device), use_cache=False)
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
