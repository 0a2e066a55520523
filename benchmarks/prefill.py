"""A bf16 prefill on Qwen2.5-Coder-0.5B: time and peak memory, base vs adapter, with and without the
contiguous LM-head input (``tinylora.models.loading.contiguous_head_input``).

    python benchmarks/prefill.py --data-dir ../shared/data          # 64 GSM8K prompts, bf16, 2 threads

Each case runs in its own process (peak RSS = that process's VmHWM): one forward of the left-padded
prompts with ``logits_to_keep=1`` and a KV cache (our decode loop's prefill). ``adapter``: 13 TinyLoRA
numbers (u = 13, tying all; the fp32 adapter path on the bf16 base). ``adapter, strided head``: the
same with the head's pre-hook removed, as before the fix. Beside them, the head alone: ``F.linear`` of
a strided (64, 1, 896) slice of (64, 172, 896) and of its contiguous copy with a bf16 151,936 × 896
weight. The CPU's flags are printed.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def prefill(case: str, data_dir: str | None, prompts: int) -> dict:
    import tinylora
    from tinylora import tasks
    from tinylora.models.loading import load_model, load_tokenizer

    name = "qwen2.5-coder-0.5b-instruct"
    model, tok = load_model(name, dtype="bf16"), load_tokenizer(name)
    if case != "base":
        tinylora.attach(model, tinylora.TinyLoRAConfig(u=13, tying="all"), progress=False)
    if case == "adapter-strided":
        model.get_output_embeddings()._forward_pre_hooks.clear()  # the head as it was before the fix
    task = tasks.get("gsm8k", data_dir=data_dir)
    tok.padding_side = "left"
    enc = tok([task.prompt(e, tok) for e in task.load("test")[:prompts]], return_tensors="pt", padding=True,
              add_special_tokens=False)
    before = peak_mb()
    t = time.perf_counter()
    with torch.no_grad():
        model(**enc, logits_to_keep=1, use_cache=True)
    return {"case": case, "s": time.perf_counter() - t, "peak_mb": peak_mb(), "peak_before_mb": before,
            "shape": list(enc["input_ids"].shape)}


def head() -> dict:
    import torch.nn.functional as F

    W = torch.randn(151936, 896).to(torch.bfloat16)
    h = torch.randn(64, 172, 896).to(torch.bfloat16)
    out = {}
    with torch.no_grad():
        for name, x in (("contiguous", h[:, -1:, :].contiguous()), ("strided", h[:, -1:, :])):
            t = time.perf_counter()
            F.linear(x, W)
            out[f"{name}_s"] = time.perf_counter() - t
            out[f"{name}_peak_mb"] = peak_mb()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.case:  # a child: one case, its result as JSON on the last line
        print(json.dumps(head() if args.case == "head" else prefill(args.case, args.data_dir, args.prompts)))
        return
    from tinylora._core.threads import cpu_features

    cpu = cpu_features()
    print(f"CPU: {cpu['model']}; flags {', '.join(cpu['flags']) or 'none of ours'}; {args.threads} threads", flush=True)
    rows = []
    for case in ("head", "base", "adapter", "adapter-strided"):
        cmd = [sys.executable, __file__, "--case", case, "--prompts", str(args.prompts), "--threads", str(args.threads)]
        if args.data_dir:
            cmd += ["--data-dir", args.data_dir]
        r = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
        rows.append(r)
        print(case, json.dumps(r), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpu": cpu, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
