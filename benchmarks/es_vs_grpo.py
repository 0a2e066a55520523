"""ES (openai, cma) against GRPO at equal wall-clock on the toy world: held-out greedy accuracy against
training time, at 13, 52 and 112 trained parameters; one plot and one JSON line per run.

    python benchmarks/es_vs_grpo.py --minutes 15 --out es_vs_grpo.jsonl          # the full grid (2¼ h)
    python benchmarks/es_vs_grpo.py --params 13 --minutes 6 --out r.jsonl        # one size
    python benchmarks/es_vs_grpo.py --plot-only --out r.jsonl                    # redraw docs/es-vs-grpo.png

Each run is the default ``tinylora train`` config with ``algo`` and the adapter swapped in and a
wall-clock budget: the loop calls ``train_step`` until the budget of *training* time is spent, and
every ``--eval-every`` minutes of training time the current adapter is scored greedily on 200
held-out test problems (evaluation time is not charged to the budget). ES's own selection
evaluations on the validation split are part of its step, so they are charged. At the end ES also
reports the mean it keeps (best on validation). Finished runs (by name) are skipped on a re-run.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ADAPTERS = {  # on the 4-layer toy backbone (28 adapted modules)
    13: {"method": "tinylora", "u": 13, "tying": "all"},
    52: {"method": "tinylora", "u": 13, "tying": "tiled", "n_tie": 7},
    112: {"method": "lora_xs", "r": 2},
}
ALGOS = {  # GRPO: the default run's settings; ES: those of the first ES run that taught the toy world (lr 0.03)
    "grpo": {"algo": "grpo"},
    "es-openai": {"algo": "es", "lr": 0.03, "es": {"method": "openai"}},
    "es-cma": {"algo": "es", "es": {"method": "cma"}},
}


def accuracy(model, tokenizer, task, examples) -> float:
    from tinylora.generation.generate import generate_texts

    prompts = [task.prompt(e, tokenizer) for e in examples]
    texts = []
    for lo in range(0, len(prompts), 64):
        texts += [c[0] for c in generate_texts(model, tokenizer, prompts[lo:lo + 64], max_new_tokens=96)]
    return sum(task.score(task.truncate(c), e.answer) for c, e in zip(texts, examples)) / len(examples)


def run(name: str, params: int, algo: str, minutes: float, eval_every: float, model: str, out_dir: Path,
        overrides: dict) -> dict:
    import torch

    from tinylora.trainers.config import TrainConfig
    from tinylora.trainers import make_trainer

    spec = dict(ALGOS[algo])
    es = {**spec.pop("es", {}), **overrides.get("es", {})}
    cfg = TrainConfig(model=model, adapter=ADAPTERS[params], out_dir=str(out_dir / name), eval_before=False,
                      checkpoint_every=0, log_completions=False, steps=100_000, **spec,
                      **({"es": es} if spec["algo"] == "es" else {}),
                      **{k: v for k, v in overrides.items() if k != "es"})
    trainer = make_trainer(cfg, progress=False)
    trainer.out.mkdir(parents=True, exist_ok=True)
    test = trainer.task.load("test")[:200]
    curve, spent, next_eval = [], 0.0, 0.0
    with torch.no_grad():
        while True:
            if spent >= next_eval or spent >= minutes * 60:
                curve.append({"train_s": round(spent, 1), "step": trainer.step,
                              "accuracy": accuracy(trainer.model, trainer.tokenizer, trainer.task, test)})
                print(f"{name}: {spent / 60:5.1f} min, step {trainer.step}: {100 * curve[-1]['accuracy']:.1f}%",
                      flush=True)
                next_eval += eval_every * 60
            if spent >= minutes * 60:
                break
            t0 = time.perf_counter()
            with torch.enable_grad():
                m = trainer.train_step(trainer.step)
            trainer.log("metrics.jsonl", [m])
            trainer.step += 1
            spent += time.perf_counter() - t0
    record = {"name": name, "params": params, "algo": algo, "minutes": minutes, "steps": trainer.step,
              "curve": curve, "final": curve[-1]["accuracy"], "start": curve[0]["accuracy"]}
    if spec["algo"] == "es" and trainer.es.keep_best:
        trainer.cfg.steps = trainer.step  # the run ended here: finish() scores this mean as the last candidate
        trainer.finish()
        record["kept"] = accuracy(trainer.model, trainer.tokenizer, trainer.task, test)
        record["kept_step"] = trainer.best["step"]
    return record


def plot(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted({r["params"] for r in records})
    fig, axes = plt.subplots(1, len(sizes), figsize=(4.2 * len(sizes), 3.6), squeeze=False, sharey=True)
    colors = {"grpo": "tab:blue", "es-openai": "tab:orange", "es-cma": "tab:green"}
    for ax, n in zip(axes[0], sizes):
        for r in (r for r in records if r["params"] == n):
            xs = [c["train_s"] / 60 for c in r["curve"]]
            ys = [100 * c["accuracy"] for c in r["curve"]]
            ax.plot(xs, ys, marker="o", ms=3, color=colors.get(r["algo"]), label=f"{r['algo']} ({r['steps']} steps)")
            if "kept" in r:
                ax.plot([xs[-1]], [100 * r["kept"]], marker="*", ms=10, color=colors.get(r["algo"]))
        ax.set_title(f"{n} trained parameters")
        ax.set_xlabel("training time (min; --threads, shared machine)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("greedy accuracy, 200 held-out (%)")
    fig.suptitle("Toy world: ES vs GRPO at equal wall-clock (★ = ES's kept mean, best on validation)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", type=int, nargs="+", default=sorted(ADAPTERS), choices=sorted(ADAPTERS))
    ap.add_argument("--algos", nargs="+", default=list(ALGOS), choices=list(ALGOS))
    ap.add_argument("--minutes", type=float, default=15.0, help="training-time budget per run")
    ap.add_argument("--eval-every", type=float, default=1.0, help="minutes of training time between test evals")
    ap.add_argument("--model", default="toy")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config override for every run (e.g. es.sigma=0.1, lr=0.03)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True, help="JSON lines, one per run (finished runs are skipped)")
    ap.add_argument("--runs", default="es_vs_grpo_runs", help="run directories")
    ap.add_argument("--plot", default="docs/es-vs-grpo.png")
    ap.add_argument("--plot-only", action="store_true")
    args = ap.parse_args()
    out = Path(args.out)
    records = [json.loads(x) for x in out.read_text().splitlines() if x.strip()] if out.exists() else []
    if not args.plot_only:
        import torch

        from tinylora.trainers.config import apply_overrides

        torch.set_num_threads(args.threads)
        overrides = apply_overrides({}, args.set)
        for n in args.params:
            for algo in args.algos:
                name = f"{algo}-{n}"
                if any(r["name"] == name for r in records):
                    continue
                r = run(name, n, algo, args.minutes, args.eval_every, args.model, Path(args.runs), overrides)
                records.append(r)
                with out.open("a") as f:
                    f.write(json.dumps(r) + "\n")
    plot(records, Path(args.plot))
    for r in records:
        kept = f", kept {100 * r['kept']:.1f}% (step {r['kept_step']})" if "kept" in r else ""
        print(f"{r['name']:>14}: {100 * r['start']:.1f}% → {100 * r['final']:.1f}% in {r['minutes']:g} min "
              f"({r['steps']} steps){kept}")


if __name__ == "__main__":
    main()
