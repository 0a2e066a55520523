"""Batched text generation with Hugging Face ``generate``: left padding, KV cache, stop at EOS.

Runs on merged weights when the model carries an adapter (no per-token adapter overhead); the base
weights are restored bit for bit afterwards.
"""

from __future__ import annotations

import contextlib

import torch

from .model import is_attached, merged


def prepare_tokenizer(tokenizer):
    """Left padding (so every prompt ends where generation starts) and a pad token."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


@torch.no_grad()
def generate_texts(
    model,
    tokenizer,
    prompts: list[str],
    *,
    n: int = 1,
    temperature: float = 0.0,
    top_p: float = 1.0,
    max_new_tokens: int = 256,
    seed: int | None = None,
) -> list[list[str]]:
    """``n`` completions per prompt (greedy when temperature == 0), special tokens stripped."""
    if n > 1 and temperature <= 0:
        raise ValueError("several samples per prompt need temperature > 0 (greedy samples are identical)")
    prepare_tokenizer(tokenizer)
    chat = bool(getattr(tokenizer, "chat_template", None))
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=not chat)
    device = next(model.parameters()).device
    enc = {k: v.to(device) for k, v in enc.items()}
    if seed is not None:
        torch.manual_seed(seed)
    kwargs = dict(max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                  eos_token_id=tokenizer.eos_token_id, num_return_sequences=n)
    if temperature > 0:
        kwargs.update(do_sample=True, temperature=temperature, top_p=top_p, top_k=0)
    else:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    ctx = merged(model) if is_attached(model) else contextlib.nullcontext()
    was_training = model.training
    model.eval()
    with ctx:
        out = model.generate(**enc, **kwargs)
    model.train(was_training)
    new = out[:, enc["input_ids"].shape[1]:]
    texts = tokenizer.batch_decode(new, skip_special_tokens=True)
    return [texts[i * n:(i + 1) * n] for i in range(len(prompts))]
