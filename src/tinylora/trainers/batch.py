"""Prompt + completion sequences as one left-padded batch, and the completion tokens' log-probs under
the model: what every gradient-based trainer computes its loss on."""

from __future__ import annotations

from dataclasses import dataclass

import torch

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
    device = next(model.parameters()).device
    kwargs = dict(input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device),
                  position_ids=batch.position_ids.to(device), use_cache=False)
    try:
        logits = model(**kwargs, logits_to_keep=K + 1).logits
    except TypeError:  # models without logits_to_keep
        logits = model(**kwargs).logits[:, -(K + 1):]
    return token_logprobs(logits[:, :-1], batch.targets.to(device), temperature)
