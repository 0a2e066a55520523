"""Off-task drift: how far an adapter moves the model on text that has nothing to do with its skill.

The reference is a prompt set with the **base model's own greedy continuations**. Both models read
that text teacher-forced (one forward each, no sampling), and at every continuation position we
take KL(adapted ‖ base) between their next-token distributions. A zero update gives exactly 0.

The same forward tells whether the adapted model's *greedy* continuation would change: greedy
decoding follows the base's text as long as the adapted argmax agrees with the base's at every
position, so a continuation changes exactly when some position's argmax differs (both argmaxes come
from the same teacher-forced forwards, so an exact tie in one model's kernels cannot count as a
change). This is what makes the check cheap enough to run on every upload: no decoding with the
adapter at all.
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from ..adapters.model import disabled, is_attached
from ..generation.generate import Sampling, generate_tokens
from ..models.loading import contiguous_head_input

SHIPPED_SETS = ("general", "refusal")


def base_of(model):
    """A context in which ``model`` is its base (its adapter switched off), whether or not one is attached."""
    return disabled(model) if is_attached(model) else contextlib.nullcontext(model)


def load_prompts(spec: str) -> list[str]:
    """A prompt set: a shipped one by name (``general``, ``refusal``), or a file — ``.jsonl`` with a
    ``prompt`` field per line, else one prompt per non-empty line."""
    if spec in SHIPPED_SETS:
        text = resources.files("tinylora.audit").joinpath("data", f"{spec}.jsonl").read_text()
        path_name = f"shipped set {spec!r}"
    else:
        path = Path(spec)
        if not path.is_file():
            raise FileNotFoundError(f"prompt set {spec!r}: neither a shipped set ({', '.join(SHIPPED_SETS)}) "
                                    "nor a file")
        text, path_name = path.read_text(), str(path)
        if path.suffix != ".jsonl":
            prompts = [line for line in text.splitlines() if line.strip()]
            if not prompts:
                raise ValueError(f"{path_name}: no prompts (one per line)")
            return prompts
    prompts = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            prompts.append(str(row["prompt"]))
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{path_name} line {i}: not a JSON object with a 'prompt' field ({e})") from e
    if not prompts:
        raise ValueError(f"{path_name}: no prompts")
    return prompts


def render(prompts: list[str], tokenizer) -> list[str]:
    """As the model is used: an instruct model's chat template (one user turn), else the raw text."""
    if getattr(tokenizer, "chat_template", None):
        return [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                              add_generation_prompt=True) for p in prompts]
    return list(prompts)


@dataclass
class Reference:
    """Prompts with the base's greedy continuations (token ids), and the base's log-probs there if kept."""

    name: str
    prompt_ids: list[list[int]]
    continuation_ids: list[list[int]]  # up to and including EOS, or max_new_tokens long
    max_new_tokens: int
    batch_size: int = 8  # of the teacher-forced forwards: the base's and the adapter's batched alike
    base_logits: list[torch.Tensor] | None = field(default=None, repr=False)  # per row (C, V), the model's dtype

    @property
    def n_tokens(self) -> int:
        return sum(len(c) for c in self.continuation_ids)

    def identity(self) -> dict[str, Any]:
        """What the figures depend on besides the adapter: for caches of audit results."""
        import hashlib

        h = hashlib.sha256(json.dumps([self.prompt_ids, self.continuation_ids]).encode()).hexdigest()
        return {"name": self.name, "max_new_tokens": self.max_new_tokens, "text_sha256": h}


def build_reference(model, tokenizer, prompts: list[str], *, name: str = "custom", max_new_tokens: int = 32,
                    batch_size: int = 8, generate_batch_size: int = 16, engine: str = "auto",
                    keep_base_bytes: int = 512 << 20, progress: bool = False) -> Reference:
    """Generate the base's greedy continuations of ``prompts`` (rendered as the model is used) and,
    when they fit in ``keep_base_bytes``, keep the base's logits on them (in the model's dtype, so
    nothing is rounded: a bf16 model's logits are bf16) so each later drift check runs one forward
    instead of two.

    ``batch_size`` is that of every teacher-forced forward on this reference, base and adapted
    alike: the same rows batched the same way give the same rounding, so a zero update measures
    exactly 0 (batched differently, fp32 kernels differ by ~1e-9 nats)."""
    if max_new_tokens < 1 or batch_size < 1 or generate_batch_size < 1:
        raise ValueError("max_new_tokens and batch_size must be positive")
    texts = render(prompts, tokenizer)
    eos = tokenizer.eos_token_id
    p_ids, c_ids = [], []
    bar = _bar(progress, len(texts), "audit: base continuations")
    with base_of(model):
        for k in range(0, len(texts), generate_batch_size):
            g = generate_tokens(model, tokenizer, texts[k:k + generate_batch_size],
                                sampling=Sampling(0.0, 1.0, max_new_tokens), engine=engine)
            for ids, mask, new in zip(g.prompt_ids.tolist(), g.prompt_mask.tolist(), g.new_ids.tolist()):
                p_ids.append([t for t, m in zip(ids, mask) if m])
                c_ids.append(new[:new.index(eos) + 1] if eos in new else new)
            bar.update(min(generate_batch_size, len(texts) - k))
    bar.close()
    ref = Reference(name, p_ids, c_ids, max_new_tokens, batch_size)
    head = model.get_output_embeddings().weight
    if ref.n_tokens * head.shape[0] * head.element_size() <= keep_base_bytes:
        with base_of(model):
            ref.base_logits = continuation_logits(model, ref, batch_size=batch_size)
    return ref


@torch.no_grad()
def continuation_logits(model, ref: Reference, *, batch_size: int = 8) -> list[torch.Tensor]:
    """Per reference row, the (C, V) next-token logits at its C continuation positions (model dtype, CPU).

    Rows are laid out as generation lays them out (left-padded prompt, continuation, padding after
    it), positions from the mask, and logits only for the last C_max + 1 positions."""
    contiguous_head_input(model)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out: list[torch.Tensor] = []
    try:
        for k in range(0, len(ref.prompt_ids), batch_size):
            ps, cs = ref.prompt_ids[k:k + batch_size], ref.continuation_ids[k:k + batch_size]
            P, C = max(len(p) for p in ps), max(len(c) for c in cs)
            ids = torch.zeros(len(ps), P + C, dtype=torch.long)
            mask = torch.zeros(len(ps), P + C, dtype=torch.long)
            for i, (p, c) in enumerate(zip(ps, cs)):
                ids[i, P - len(p):P] = torch.tensor(p)
                ids[i, P:P + len(c)] = torch.tensor(c, dtype=torch.long)
                mask[i, P - len(p):P + len(c)] = 1
            pos = (mask.cumsum(-1) - 1).clamp_min(0)
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=pos.to(device),
                           use_cache=False, logits_to_keep=C + 1).logits[:, :-1]  # positions P-1 … P+C-2
            out += [logits[i, :len(c)].cpu().clone() for i, c in enumerate(cs)]  # clone: not a view of the batch
    finally:
        model.train(was_training)
    return out


def drift(model, ref: Reference, *, batch_size: int | None = None) -> dict[str, Any]:
    """KL(adapted ‖ base) per continuation token — mean, 95th percentile and max over all tokens —
    and the share of prompts whose greedy continuation the adapter changes (with where it first
    diverges). The adapted model is ``model`` as it is; the base is ``model`` with its adapter off.
    ``batch_size`` defaults to the reference's (another one recomputes the base's log-probs alike)."""
    batch_size = batch_size or ref.batch_size
    base = ref.base_logits if batch_size == ref.batch_size else None
    if base is None:
        with base_of(model):
            base = continuation_logits(model, ref, batch_size=batch_size)
    adapted = continuation_logits(model, ref, batch_size=batch_size)
    kls, changed, first = [], 0, []
    for xa, xb in zip(adapted, base):
        la, lb = torch.log_softmax(xa.float(), -1), torch.log_softmax(xb.float(), -1)
        kl = (la.exp() * (la - lb)).sum(-1).clamp_min(0.0)  # rounding can leave −1e-9 where the two agree
        kls.append(kl)
        differ = (la.argmax(-1) != lb.argmax(-1)).nonzero()
        first.append(int(differ[0]) if len(differ) else None)
        changed += bool(len(differ))
    flat = torch.cat(kls).double()
    n = len(kls)
    return {"kl_mean": float(flat.mean()), "kl_p95": _quantile(flat, 0.95), "kl_max": float(flat.max()),
            "changed_share": changed / n, "changed": changed, "prompts": n, "tokens": int(flat.numel()),
            "first_divergence": first, "per_prompt_kl": [float(k.double().mean()) for k in kls]}


def _quantile(x: torch.Tensor, q: float) -> float:
    """The q-quantile with linear interpolation (numpy's default), exact for small sets."""
    s = torch.sort(x).values
    if len(s) == 1:
        return float(s[0])
    pos = q * (len(s) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return float(s[lo] + (s[hi] - s[lo]) * (pos - lo))


def _bar(enabled: bool, total: int, desc: str):
    if enabled:
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit="prompt", dynamic_ncols=True)

    class _Null:
        def update(self, n):
            pass

        def close(self):
            pass

    return _Null()
