"""How long the audit's drift check takes — what `tinylora serve --max-kl` pays per uploaded adapter.

    python benchmarks/audit_speed.py --model toy
    python benchmarks/audit_speed.py --model qwen2.5-coder-0.5b-instruct --dtype auto

Times, in one process: loading the model; the base's reference text (its greedy continuations of the
48 shipped general prompts, once per server); one adapter's drift check (a 13-parameter TinyLoRA
adapter with random values; the check is the same work whatever the values); and, for scale, a plain
teacher-forced forward of the same tokens without any adapter (the floor the check is measured
against). Prints one JSON line with the CPU flags.
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="toy")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--repeats", type=int, default=2)
    a = p.parse_args()

    import tinylora
    from tinylora._core.dtypes import resolve_dtype
    from tinylora._core.threads import cpu_features
    from tinylora.audit import build_reference, drift, load_prompts
    from tinylora.audit.drift import continuation_logits
    from tinylora.models.loading import load_model, load_tokenizer

    dtype, why = resolve_dtype(a.dtype, "cpu")
    t = time.time()
    tok, model = load_tokenizer(a.model), load_model(a.model, dtype=dtype)
    load_s = time.time() - t
    tinylora.attach(model, tinylora.TinyLoRAConfig(u=13, tying="all"), progress=False)
    with torch.no_grad():
        model.tinylora.v[0].copy_(0.05 * torch.randn(13, generator=torch.Generator().manual_seed(0)))
    t = time.time()
    ref = build_reference(model, tok, load_prompts("general"), name="general", max_new_tokens=a.max_new_tokens,
                          batch_size=a.batch_size)
    ref_s = time.time() - t
    checks = []
    for _ in range(a.repeats):
        t = time.time()
        d = drift(model, ref)
        checks.append(time.time() - t)
    t = time.time()
    with tinylora.disabled(model):
        continuation_logits(model, ref, batch_size=a.batch_size)
    forward_s = time.time() - t
    print(json.dumps({"model": a.model, "dtype": dtype, "dtype_why": why, "prompts": d["prompts"], "tokens": d["tokens"],
                      "prompt_tokens": sum(len(x) for x in ref.prompt_ids), "base_logits_kept": ref.base_logits is not None,
                      "load_s": round(load_s, 2), "reference_s": round(ref_s, 2),
                      "check_s": [round(x, 2) for x in checks], "base_forward_s": round(forward_s, 2),
                      "kl_mean": d["kl_mean"], "threads": torch.get_num_threads(), "cpu": cpu_features()}))


if __name__ == "__main__":
    main()
