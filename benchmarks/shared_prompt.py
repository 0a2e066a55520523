"""GRPO's training forward + backward on a real model: each prompt once per group vs the padded batch.

    python benchmarks/shared_prompt.py --model qwen2.5-coder-0.5b-instruct --data-dir ../shared/data/gsm8k

One micro-batch of ``--prompts`` GSM8K train prompts × ``--group`` completions (the gold solutions,
cut or repeated to ``--completion-tokens`` tokens, different per sample), 13 TinyLoRA parameters.
Both forwards compute the same loss (checked here to 1e-4 relative, tested to 1e-5 on tiny models);
the figure is the median wall time of ``--reps`` forward + backward passes, and the ratio measured in
the same run. CPU flags are recorded with it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import tinylora  # noqa: E402
from tinylora import tasks  # noqa: E402
from tinylora._core.threads import cpu_features  # noqa: E402
from tinylora.models.loading import load_model, load_tokenizer  # noqa: E402
from tinylora.trainers.batch import build_batch, completion_logprobs, shared_prompt_logprobs  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--prompts", type=int, default=2)
    ap.add_argument("--group", type=int, default=4)
    ap.add_argument("--completion-tokens", type=int, default=256)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    tok, model = load_tokenizer(a.model), load_model(a.model)
    tinylora.attach(model, tinylora.TinyLoRAConfig(u=13, tying="all"))
    with torch.no_grad():
        tinylora.set_flat_values(model, 0.01 * torch.linspace(-1, 1, 13))
    params = [p for p in model.parameters() if p.requires_grad]
    task = tasks.get("gsm8k", data_dir=a.data_dir)
    ex = task.load("train")[: a.prompts * a.group]
    P, C = [], []
    for j in range(a.prompts):
        p = tok(task.prompt(ex[j], tok), add_special_tokens=False)["input_ids"]
        for s in range(a.group):
            g = tok(ex[j * a.group + s].solution, add_special_tokens=False)["input_ids"]
            n = a.completion_tokens - 8 * s  # unequal lengths, as sampled completions are
            P.append(p)
            C.append((g * (n // len(g) + 1))[:n])
    adv = torch.linspace(-1, 1, len(C))

    def step(shared: bool) -> tuple[float, float]:
        t0 = time.perf_counter()
        if shared:
            lp, mask = shared_prompt_logprobs(model, P, C, 1.0)
        else:
            b = build_batch(P, C, tok.pad_token_id)
            lp, mask = completion_logprobs(model, b, 1.0), b.mask
        loss = -(lp * mask * adv[:, None]).sum() / mask.sum()
        loss.backward()
        for p in params:
            p.grad = None
        return time.perf_counter() - t0, float(loss)

    out = {"model": a.model, "prompts": a.prompts, "group": a.group, "completion_tokens": a.completion_tokens,
           "prompt_tokens": [len(P[j * a.group]) for j in range(a.prompts)], "threads": a.threads, "cpu": cpu_features()}
    for shared in (False, True):
        runs = [step(shared) for _ in range(a.reps)]
        out["shared" if shared else "padded"] = {"seconds": round(statistics.median(t for t, _ in runs), 2),
                                                 "loss": runs[0][1]}
    assert abs(out["shared"]["loss"] - out["padded"]["loss"]) <= 1e-4 * abs(out["padded"]["loss"]), out
    out["speedup"] = round(out["padded"]["seconds"] / out["shared"]["seconds"], 2)
    print(json.dumps(out))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
