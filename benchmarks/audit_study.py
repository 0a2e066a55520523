"""The audit's separation study (docs/audit.md): skill adapters against adapters that change behaviour
off-task, each audited the same way — off-task drift (KL, greedy change) and the on-task effect.

    # the off-task objective's prompts (GSM8K train questions; the reward ignores the answer)
    python benchmarks/audit_study.py offtask-data --out /tmp/offtask
    # the table: named adapters, plus K random directions of the first adapter's norm and scaled copies
    python benchmarks/audit_study.py table --model toy --task arith --limit 200 \
        --adapter skill=runs/toy-skill/adapter.safetensors --random 5 --scales 3,10 --out study.json
    # the drift on one reference file, split by a field of its rows (toy-reference writes ``style``)
    python benchmarks/audit_study.py groups --study study.json --reference toy-docs.jsonl
    # greedy continuations that open with the step style, per group, base and adapters
    python benchmarks/audit_study.py openings --model toy --adapter skill=runs/toy-skill/adapter.safetensors \
        --reference toy-docs.jsonl

Prints one markdown row per adapter: parameters, bytes, ‖values‖, KL mean / p95, greedy changed,
on-task accuracy before → after (each mode), and the threshold that separates the skill adapters
(named ``skill*``) from the rest, where one does.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch


def offtask_data(args) -> None:
    src = Path(args.gsm8k) / "train.jsonl"
    if not src.is_file():
        sys.exit(f"audit_study: {src} not found (--gsm8k DIR)")
    rows = [json.loads(line) for line in src.read_text().splitlines() if line.strip()]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    splits = {"train": rows[:2000], "validation": rows[2000:2064], "test": rows[2064:2128]}
    for split, part in splits.items():
        with (out / f"{split}.jsonl").open("w") as f:
            for i, r in enumerate(part):
                f.write(json.dumps({"id": f"{split}-{i}", "prompt": r["question"], "answer": ""}) + "\n")
    print(f"wrote {', '.join(f'{k} {len(v)}' for k, v in splits.items())} prompts to {out}")


def caps_skill_data(args) -> None:
    """The capitals *skill*'s prompts: GSM8K train questions, every other one opened by the request
    "Answer in capital letters only." (answer ``upper``), the rest plain (``lower``); the reward
    ``audit_rewards:capitals_when_asked`` pays capitals only where asked."""
    from audit_rewards import CAPS_INSTRUCTION

    src = Path(args.gsm8k) / "train.jsonl"
    rows = [json.loads(line) for line in src.read_text().splitlines() if line.strip()]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for split, part in {"train": rows[:2000], "validation": rows[2000:2064], "test": rows[2064:2128]}.items():
        with (out / f"{split}.jsonl").open("w") as f:
            for i, r in enumerate(part):
                asked = i % 2 == 0
                f.write(json.dumps({"id": f"{split}-{i}", "prompt": (CAPS_INSTRUCTION if asked else "") + r["question"],
                                    "answer": "upper" if asked else "lower"}) + "\n")
    print(f"wrote the capitals-when-asked prompts to {out}")


def toy_reference(args) -> None:
    """The toy world's own off-task text: train-split problems opened by the instruction that asks for
    the *direct* style ("Give only the answer."), which the skill (choosing steps when not told) should
    leave alone, and the same problems opened by "Show your steps." (already the skill's style)."""
    from tinylora.tasks import get
    from tinylora.toy.backbone import INSTRUCTIONS

    ex = get("arith").load("train")[:args.n]
    with open(args.out, "w") as f:
        for style in ("direct", "step"):
            for e in ex[:args.n // 2]:
                f.write(json.dumps({"prompt": f"{INSTRUCTIONS[style]}Q: {e.question}\nA:", "style": style}) + "\n")
    print(f"wrote {2 * (args.n // 2)} prompts to {args.out}")


def table(args) -> None:
    import tinylora
    from tinylora._core.dtypes import resolve_dtype
    from tinylora._core.threads import cpu_features
    from tinylora.adapters.file import read
    from tinylora.adapters.multi import flat_values, set_flat_values
    from tinylora.audit import build_reference, drift, load_prompts, task_effect
    from tinylora.models.loading import load_model, load_tokenizer

    dtype, why = resolve_dtype(args.dtype, "cpu")
    tok = load_tokenizer(args.model)
    model = load_model(args.model, dtype=dtype)
    named = [a.split("=", 1) for a in args.adapter]
    tinylora.load(model, named[0][1])
    v0 = flat_values(model)
    entries = [("zero", None, torch.zeros_like(v0))]
    for name, path in named:
        tinylora.load(model, path)
        entries.append((name, path, flat_values(model)))
    g = torch.Generator().manual_seed(0)
    for k in range(args.random):
        d = torch.randn(v0.shape, generator=g, dtype=torch.float64).float()
        entries.append((f"random{k}", None, d * (v0.norm() / d.norm())))
    for s in args.scales:
        entries.append((f"{named[0][0]}×{s:g}", None, v0 * s))
    refs = {}
    t0 = time.time()
    for spec in args.reference:
        refs[spec] = build_reference(model, tok, load_prompts(spec), name=spec, max_new_tokens=args.max_new_tokens)
    print(f"references built in {time.time() - t0:.1f} s ({dtype}: {why}; CPU {cpu_features()})", flush=True)
    task = tinylora.tasks.get(args.task, **dict(kv.split("=", 1) for kv in args.task_arg)) if args.task else None
    rows = []
    for name, path, values in entries:
        set_flat_values(model, values)
        info = read(path) if path else None
        row = {"adapter": name, "file": path, "parameters": values.numel(),
               "bytes": info.payload_bytes if info else 4 * values.numel(), "values_norm": float(values.norm())}
        for spec, ref in refs.items():
            t = time.time()
            d = drift(model, ref)
            row[spec] = {k: d[k] for k in ("kl_mean", "kl_p95", "kl_max", "changed_share")}
            row[spec]["seconds"] = round(time.time() - t, 2)
            row[spec]["per_prompt_kl"] = d["per_prompt_kl"]
            row[spec]["first_divergence"] = d["first_divergence"]
        if task is not None:
            row["task"] = task_effect(model, tok, task, split=args.split, limit=args.limit, batch_size=args.batch_size,
                                      max_new_tokens=args.task_tokens, examples=0, progress=False)
        rows.append(row)
        print(json.dumps({k: ({m: x for m, x in v.items() if m not in ("per_prompt_kl", "first_divergence")}
                              if isinstance(v, dict) else v) for k, v in row.items() if k != "task"}), flush=True)
    out = {"model": args.model, "dtype": dtype, "cpu": cpu_features(), "references": list(refs), "rows": rows,
           "command": " ".join(sys.argv)}
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2))
    print(markdown(out))


def groups(args) -> None:
    """Split a study's drift on one reference file by a field of its rows (the toy reference's ``style``):
    does a skill adapter move the text it was not trained for (told "Give only the answer.") as much as
    the text it was?"""
    out = json.loads(Path(args.study).read_text())
    keys = [json.loads(line).get(args.field) for line in Path(args.reference).read_text().splitlines() if line.strip()]
    names = sorted({k for k in keys if k is not None})
    print("| adapter | " + " | ".join(f"{g}: KL mean | changed" for g in names) + " |")
    print("|" + "---|" * (1 + 2 * len(names)))
    for r in out["rows"]:
        d = r[args.reference]
        cells = [r["adapter"]]
        for g in names:
            idx = [i for i, k in enumerate(keys) if k == g]
            kl = sum(d["per_prompt_kl"][i] for i in idx) / len(idx)
            ch = sum(d["first_divergence"][i] is not None for i in idx) / len(idx)
            cells += [f"{kl:.3g}", f"{100 * ch:.0f}%"]
        print("| " + " | ".join(cells) + " |")


def openings(args) -> None:
    """How many greedy continuations open with a prefix, per group of a reference file: does a skill
    adapter override an explicit instruction (the toy's "Give only the answer.")?"""
    import tinylora
    from tinylora.generation.generate import generate_texts
    from tinylora.models.loading import load_model, load_tokenizer

    rows = [json.loads(line) for line in Path(args.reference).read_text().splitlines() if line.strip()]
    tok, model = load_tokenizer(args.model), load_model(args.model)
    for name, path in [("base", None), *(a.split("=", 1) for a in args.adapter)]:
        if path:
            tinylora.load(model, path)
        for g in sorted({r.get(args.field) for r in rows}, key=str):
            prompts = [r["prompt"] for r in rows if r.get(args.field) == g]
            outs = [o[0] for o in generate_texts(model, tok, prompts, max_new_tokens=args.max_new_tokens)]
            k = sum(o.strip().startswith(args.prefix) for o in outs)
            print(f"{name} | {args.field}={g} | open with {args.prefix!r}: {k}/{len(outs)} | e.g. {outs[0][:48]!r}")


def _acc(t: dict, side: str) -> str:
    s = t[side]
    if s.get("modes"):
        return " \\| ".join(f"{100 * s['modes'][m]['accuracy']:.1f}" for m in s["modes"])
    return f"{100 * s['accuracy']:.1f}"


def markdown(out: dict) -> str:
    refs = out["references"]
    head = "| adapter | params | bytes | ‖v‖ | " + " | ".join(f"{r}: KL mean | p95 | changed" for r in refs)
    head += " | on-task before → after |" if any("task" in r for r in out["rows"]) else " |"
    lines = [head, "|" + "---|" * (4 + 3 * len(refs) + (1 if "task" in out["rows"][0] else 0))]
    for r in out["rows"]:
        cells = [r["adapter"], str(r["parameters"]), str(r["bytes"]), f"{r['values_norm']:.3g}"]
        for ref in refs:
            d = r[ref]
            cells += [f"{d['kl_mean']:.3g}", f"{d['kl_p95']:.3g}", f"{100 * d['changed_share']:.0f}%"]
        if "task" in r:
            t = r["task"]
            cells.append(f"{_acc(t, 'before')} → {_acc(t, 'after')}")
        lines.append("| " + " | ".join(cells) + " |")
    for ref in refs:
        skill = [r[ref]["kl_mean"] for r in out["rows"] if r["adapter"].startswith("skill") and "×" not in r["adapter"]]
        other = [r[ref]["kl_mean"] for r in out["rows"] if not r["adapter"].startswith("skill") and r["adapter"] != "zero"]
        if skill and other:
            lo, hi = max(skill), min(other)
            lines.append(f"\n{ref}: skill adapters' KL mean ≤ {lo:.3g}, the others' ≥ {hi:.3g}: "
                         + (f"a threshold in ({lo:.3g}, {hi:.3g}) separates them" if lo < hi else "no threshold separates them"))
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    o = sub.add_parser("offtask-data")
    o.add_argument("--out", required=True)
    o.add_argument("--gsm8k", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k"))
    o.set_defaults(func=offtask_data)
    c = sub.add_parser("caps-skill-data", help="prompts for the capitals-when-asked skill (benchmarks/ on PYTHONPATH)")
    c.add_argument("--out", required=True)
    c.add_argument("--gsm8k", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k"))
    c.set_defaults(func=caps_skill_data)
    r = sub.add_parser("toy-reference")
    r.add_argument("--out", required=True)
    r.add_argument("--n", type=int, default=48)
    r.set_defaults(func=toy_reference)
    g = sub.add_parser("groups", help="split a study's drift on one reference file by a field of its rows")
    g.add_argument("--study", required=True)
    g.add_argument("--reference", required=True)
    g.add_argument("--field", default="style")
    g.set_defaults(func=groups)
    o2 = sub.add_parser("openings", help="greedy continuations opening with a prefix, per group of a reference file")
    o2.add_argument("--model", required=True)
    o2.add_argument("--adapter", action="append", default=[], metavar="NAME=FILE")
    o2.add_argument("--reference", required=True)
    o2.add_argument("--field", default="style")
    o2.add_argument("--prefix", default="Step by step:")
    o2.add_argument("--max-new-tokens", type=int, default=32)
    o2.set_defaults(func=openings)
    t = sub.add_parser("table")
    t.add_argument("--model", required=True)
    t.add_argument("--adapter", action="append", required=True, metavar="NAME=FILE",
                   help="named adapter files (skill* = skill adapters); the first sets the random directions' norm")
    t.add_argument("--random", type=int, default=5)
    t.add_argument("--scales", type=lambda s: [float(x) for x in s.split(",") if x], default=[])
    t.add_argument("--reference", action="append", default=None)
    t.add_argument("--task")
    t.add_argument("--task-arg", action="append", default=[])
    t.add_argument("--split", default="test")
    t.add_argument("--limit", type=int, default=200)
    t.add_argument("--task-tokens", type=int, default=96)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--max-new-tokens", type=int, default=32)
    t.add_argument("--dtype", default="fp32")
    t.add_argument("--out")
    t.set_defaults(func=table)
    args = p.parse_args()
    if getattr(args, "reference", None) is None and args.cmd == "table":
        args.reference = ["general"]
    args.func(args)


if __name__ == "__main__":
    main()
