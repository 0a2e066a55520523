"""Can an adapter reach the toy backbone's style decision without breaking its arithmetic?

    python benchmarks/toy_steer.py                       # the adapters in the table of BENCHMARKS.md
    python benchmarks/toy_steer.py --adapter '{"method": "tinylora", "u": 13, "tying": "all"}'

Not RL: a capacity probe that isolates the parameterization from GRPO's noise. On 64 training
prompts it maximises log P(step-by-step opening | "A: ") while holding the teacher-forced loss of
the correct step-by-step solutions (weight ``--lam``), with Adam, then evaluates 100 held-out
problems greedily, free and forced. An adapter that cannot move P(step) here cannot be moved by
GRPO either; one that can shows how far RL could go at that size.
"""

from __future__ import annotations

import argparse
import json

import torch

DEFAULT_ADAPTERS = [
    {"method": "tinylora", "u": 13, "tying": "all"},
    {"method": "tinylora", "u": 13, "tying": "tiled", "n_tie": 14},
    {"method": "tinylora", "u": 13, "tying": "tiled", "n_tie": 7},
    {"method": "tinylora", "u": 4, "tying": "tiled", "n_tie": 7},
    {"method": "tinylora", "u": 13, "tying": "none"},
    {"method": "lora_xs", "r": 2},
]


def probe(model_path: str, adapter: dict, steps: int, lr: float, lam: float, n_eval: int) -> dict:
    import tinylora
    from tinylora.evaluation import evaluate
    from tinylora.models.loading import load_model, load_tokenizer
    from tinylora.tasks.arith_problems import problems
    from tinylora.tasks.arith import ArithTask

    torch.manual_seed(0)
    model, tok = load_model(model_path), load_tokenizer(model_path)
    tok.padding_side = "left"
    tinylora.attach(model, tinylora.config_from_dict(adapter), progress=False)
    ps = problems("train", 64, 0)
    enc = tok([f"Q: {p.question}\nA: " for p in ps], return_tensors="pt", padding=True, add_special_tokens=False)
    pos = (enc["attention_mask"].cumsum(-1) - 1).clamp_min(0)
    s_id, h_id = tok.convert_tokens_to_ids("S"), tok.convert_tokens_to_ids("#")
    ids, labels = [], []
    for p in ps:
        a = tok(f"Q: {p.question}\nA:", add_special_tokens=False)["input_ids"]
        b = tok(" " + p.step(), add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        ids.append(a + b)
        labels.append([-100] * len(a) + b)
    width = max(map(len, ids))
    x = torch.full((len(ids), width), tok.pad_token_id)
    y = torch.full((len(ids), width), -100)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, (a, b) in enumerate(zip(ids, labels)):
        x[i, : len(a)], y[i, : len(b)], mask[i, : len(a)] = torch.tensor(a), torch.tensor(b), 1
    def accuracy() -> dict:
        out = {}
        for forced in (False, True):
            task = ArithTask(n_test=n_eval, forced=forced)
            out["forced" if forced else "free"] = evaluate(model, tok, task, max_new_tokens=60, batch_size=n_eval,
                                                           progress=False)["accuracy"]
        return out

    acc_before = accuracy()  # v = 0: the base model
    opt = torch.optim.Adam(tinylora.trainable_parameters(model), lr=lr)
    trace = []
    for it in range(steps + 1):
        lp = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], position_ids=pos).logits[:, -1]
        lp = lp.log_softmax(-1)
        nll = model(input_ids=x, attention_mask=mask, labels=y).loss
        if it in (0, steps):
            d = lp.detach()
            trace.append({"p_step": round(float(d[:, s_id].exp().mean()), 3), "skill_nll": round(float(nll.detach()), 4),
                          "greedy_step": round(float((d[:, s_id] > d[:, h_id]).float().mean()), 3)})
        if it == steps:
            break
        loss = -lp[:, s_id].mean() + lam * nll
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {"model": model_path, "adapter": adapter, "params": tinylora.num_trainable(model), "before": trace[0],
            "after": trace[-1], "accuracy_before": acc_before, "accuracy_after": accuracy()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="toy")
    ap.add_argument("--adapter", action="append", type=json.loads, help="adapter config as JSON (repeatable)")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--lam", type=float, default=10.0, help="weight of the skill-keeping loss")
    ap.add_argument("--n-eval", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="also append each result as a JSON line to this file")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print("| adapter | params | P(step) before → after | greedy picks step (train prompts) | free acc. before → after "
          "| forced acc. before → after |")
    print("|---|---|---|---|---|---|")
    for adapter in a.adapter or DEFAULT_ADAPTERS:
        r = probe(a.model, adapter, a.steps, a.lr, a.lam, a.n_eval)
        name = ", ".join(f"{k}={v}" for k, v in adapter.items() if k != "method")
        b, f = r["accuracy_before"], r["accuracy_after"]
        print(f"| {adapter['method']} {name} | {r['params']} | {r['before']['p_step']} → {r['after']['p_step']} | "
              f"{r['before']['greedy_step']:.0%} → {r['after']['greedy_step']:.0%} | {b['free']:.0%} → {f['free']:.0%} | "
              f"{b['forced']:.0%} → {f['forced']:.0%} |", flush=True)
        if a.json:
            with open(a.json, "a") as fh:
                fh.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
