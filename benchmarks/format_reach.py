"""How far can a tiny update move a real model's answer *format* at fixed skill? (claim 6's probe)

    python benchmarks/format_reach.py --model qwen2.5-coder-0.5b-instruct --params 1,13,52,364 \
        --data-dir ../shared/data/gsm8k --out format_reach.jsonl
    python benchmarks/format_reach.py --plot docs/format-reach.png --out format_reach.jsonl,more.jsonl   # draw

GSM8K's strict score needs ``#### N``. For ``--n`` validation problems the base model answers greedily
(its own reasoning and its own final answer, whatever it is); each sequence is then that completion +
``"\\n\\n#### <its own answer>"`` + EOS, and the probe measures

- ``tail_logp``: log P(the strict tail) per sequence, summed over the tail's tokens — how likely the
  model is to *append* the asked-for format to what it already wrote;
- ``body_nll``: the mean per-token NLL of the completion itself — the skill held fixed.

For each budget it takes the gradient of ``tail_logp`` at v = 0 (TinyLoRA r = 2, u = 13 tied in
groups: 1 = u 1 all, 13 = u 13 all, 52 and 364: as many tiled groups of 13 as fit) and walks along it: the reach is
the best ``tail_logp`` gain whose ``body_nll`` stays within 10% of the base's. A reach of a few nats
against a tail at −30 says GRPO with the strict reward will never sample a rewarded completion; a
reach to ≳ −3 says it can. One gradient and a line search, so a lower bound on what training reaches.
Finished (model, params) records in ``--out`` are skipped on a re-run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import tinylora  # noqa: E402
from tinylora import tasks  # noqa: E402
from tinylora._core.threads import cpu_features  # noqa: E402
from tinylora.evaluation import evaluate  # noqa: E402
from tinylora.models.loading import load_model, load_tokenizer  # noqa: E402
from tinylora.tasks.answers import extract_final_number  # noqa: E402
from tinylora.trainers.batch import build_batch, completion_logprobs  # noqa: E402

SCALES = (0.02, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8)  # ‖v‖ along the gradient; stops past +50% body NLL


def adapter_for(params: str):
    """1 and 13: one vector for every module; more: u = 13 vectors tied over module groups (tiled),
    as many groups as the budget holds (the record says the exact count); ``loraN``: LoRA rank N on
    every module (the large-update reference)."""
    if params.startswith("lora"):
        return tinylora.LoRAConfig(r=int(params[4:]))
    params = int(params)
    if params in (1, 13):
        return tinylora.TinyLoRAConfig(u=params, tying="all")
    return tinylora.TinyLoRAConfig(u=13, tying="tiled", budget=params)


def own_sequences(model, tok, task, n: int, max_new_tokens: int, out: Path):
    """Prompt ids and completion + strict-tail ids (and tail lengths) for the first n usable answers of
    the base's 24 greedy validation completions."""
    s = evaluate(model, tok, task, split="validation", limit=24, batch_size=24, max_new_tokens=max_new_tokens,
                 out_dir=out, progress=True)
    rows = [json.loads(x) for x in (out / "examples.jsonl").read_text().splitlines()]
    val = {e.id: e for e in task.load("validation")}
    P, C, T = [], [], []
    for r in rows:
        text = r["completions"][0]
        ans = extract_final_number(text, "marked")
        if ans is None or r["capped"][0]:
            continue
        body = tok(text.rstrip(), add_special_tokens=False)["input_ids"]
        tail = tok("\n\n#### " + ans, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        P.append(tok(task.prompt(val[r["id"]], tok), add_special_tokens=False)["input_ids"])
        C.append(body + tail)
        T.append(len(tail))
        if len(P) == n:
            break
    return P, C, T, s


def probe(model, tok, P, C, T, cfg) -> dict:
    tinylora.attach(model, cfg)
    tp = [p for p in model.parameters() if p.requires_grad]
    b = build_batch(P, C, tok.pad_token_id)
    K = b.mask.shape[1]
    tail_m = torch.zeros_like(b.mask)
    for i, t in enumerate(T):
        tail_m[i, K - t:] = 1
    body_m = b.mask - tail_m

    def measure(grad: bool):
        with torch.set_grad_enabled(grad):
            lp = completion_logprobs(model, b, 1.0)
            return (lp * tail_m).sum() / len(T), -(lp * body_m).sum() / body_m.sum()

    t0 = time.time()
    start = tinylora.flat_values(model).detach().clone()  # 0 for TinyLoRA; LoRA starts at (A random, B = 0)
    tail0, body0 = measure(True)
    g = torch.cat([x.flatten() for x in torch.autograd.grad(tail0, tp)])
    d = g / g.norm()
    line = []
    for s in SCALES:
        with torch.no_grad():
            tinylora.set_flat_values(model, start + s * d)
        tl, bn = measure(False)
        line.append({"norm": s, "tail_logp": round(tl.item(), 3), "body_nll": round(bn.item(), 4)})
        if bn.item() > 1.5 * body0.item():
            break
    ok = [x for x in line if x["body_nll"] <= 1.1 * body0.item()]
    best = max(ok, key=lambda x: x["tail_logp"]) if ok else None
    tinylora.detach(model)
    return {"params": sum(p.numel() for p in tp), "adapter": cfg.to_dict(), "tail_logp": round(tail0.item(), 3),
            "body_nll": round(body0.item(), 4), "grad_norm": round(g.norm().item(), 4), "line": line,
            "reach": round(best["tail_logp"] - tail0.item(), 3) if best else 0.0,
            "best": best, "probe_s": round(time.time() - t0, 1)}


def plot(records: list[dict], png: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for model, n in dict.fromkeys((r["model"], r["n"]) for r in records):
        rs = sorted((r for r in records if (r["model"], r["n"]) == (model, n) and r["adapter"]["method"] == "tinylora"),
                    key=lambda r: r["params"])
        ax.plot([r["params"] for r in rs], [r["tail_logp"] + r["reach"] for r in rs], "o-" if n >= 8 else "s--",
                label=f"{model}, {n} completions (v = 0: {rs[0]['tail_logp']:.1f})")
    ax.axhline(-3, color="grey", ls=":", lw=1)
    ax.text(1, -2.6, "≈ 1 sample in 20 writes it", color="grey", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("trained parameters (TinyLoRA r = 2, tied)")
    ax.set_ylabel("reachable log P(strict tail '#### N'), nats")
    ax.set_ylim(top=0)
    ax.set_title("How far a tiny update moves the strict answer format at fixed skill", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="a name of `tinylora models list`, a folder or a .gguf")
    ap.add_argument("--plot", help="draw the records in --out to this PNG and stop")
    ap.add_argument("--params", default="1,13,52,364", help="budgets, comma-separated (loraN: LoRA rank N)")
    ap.add_argument("--n", type=int, default=8, help="sequences (the base's own answered completions)")
    ap.add_argument("--max-new-tokens", type=int, default=400)
    ap.add_argument("--own-dir", help="where the base's 24 greedy validation completions are kept (resumable)")
    ap.add_argument("--data-dir", help="folder with GSM8K's train.jsonl (validation is carved from it)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="format_reach.jsonl", help="records (JSON lines); with --plot, comma-separated files")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    if a.plot:
        plot([json.loads(x) for f in a.out.split(",") for x in Path(f).read_text().splitlines() if x.strip()], a.plot)
        return
    if not (a.model and a.data_dir):
        ap.error("--model and --data-dir are required (unless --plot)")
    have = {(r["model"], r["requested"]) for r in map(json.loads, out.read_text().splitlines())} if out.exists() else set()
    todo = [x for x in a.params.split(",") if (a.model, x) not in have and (a.model, int(x) if x.isdigit() else x) not in have]
    if not todo:
        return
    tok, model = load_tokenizer(a.model), load_model(a.model)
    task = tasks.get("gsm8k", data_dir=a.data_dir)
    tinylora.attach(model, tinylora.TinyLoRAConfig(u=1, tying="all"))
    n_modules = len(tinylora.adapted_modules(model))
    tinylora.detach(model)
    own = Path(a.own_dir) if a.own_dir else out.parent / f"{out.stem}.{a.model.replace('/', '_')}.own"
    P, C, T, s = own_sequences(model, tok, task, a.n, a.max_new_tokens, own)
    for params in todo:
        cfg = adapter_for(params)
        r = probe(model, tok, P, C, T, cfg)
        r.update(model=a.model, n=len(T), requested=params, base_flexible=s["modes"]["flexible"]["accuracy"],
                 base_strict=s["modes"]["strict"]["accuracy"], cpu=cpu_features(), threads=a.threads,
                 modules=n_modules)
        with out.open("a") as fh:
            fh.write(json.dumps(r) + "\n")
        print(json.dumps({k: r[k] for k in ("model", "requested", "params", "tail_logp", "body_nll", "reach", "probe_s")}), flush=True)


if __name__ == "__main__":
    main()
