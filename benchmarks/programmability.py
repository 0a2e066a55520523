"""Which backbones can a tiny update program? The capacity probe at 1 / 13 / 52 / 364 parameters and one
GRPO run per backbone, and the plot ``docs/programmability.png``.

    python benchmarks/programmability.py --backbone 1M=DIR --backbone 4M=DIR2 ... --out results.jsonl
    python benchmarks/programmability.py --plot-only --out results.jsonl     # redraw from the records

Probe (benchmarks/toy_steer.py): supervise log P(step-by-step opening) while holding the skill, then
free greedy accuracy on 100 held-out problems; the probe's gain is after − before. GRPO: the default
``tinylora train`` (its current defaults: configs/toy-grpo.yaml, 13 parameters) on that backbone; its gain is
greedy accuracy after − before on 200 held-out problems. Finished records are skipped on a re-run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ADAPTERS = {  # trained parameters on a 4-layer backbone (28 adapted modules) → adapter
    1: {"method": "tinylora", "u": 1, "tying": "all"},
    13: {"method": "tinylora", "u": 13, "tying": "all"},
    52: {"method": "tinylora", "u": 13, "tying": "tiled", "n_tie": 7},
    364: {"method": "tinylora", "u": 13, "tying": "none"},
}
HERE = Path(__file__).resolve().parent


def done(out: Path) -> list[dict]:
    return [json.loads(x) for x in out.read_text().splitlines() if x.strip()] if out.exists() else []


def run_probe(name: str, path: str, params: int, out: Path, threads: int) -> None:
    tmp = out.with_suffix(".probe.tmp")
    tmp.unlink(missing_ok=True)
    subprocess.run([sys.executable, str(HERE / "toy_steer.py"), "--model", path, "--adapter", json.dumps(ADAPTERS[params]),
                    "--threads", str(threads), "--json", str(tmp)], check=True)
    r = json.loads(tmp.read_text())
    tmp.unlink()
    rec = {"backbone": name, "path": path, "kind": "probe", "params": params,
           "gain": r["accuracy_after"]["free"] - r["accuracy_before"]["free"], "detail": r}
    with out.open("a") as fh:
        fh.write(json.dumps(rec) + "\n")


def run_grpo(name: str, path: str, out: Path, run_dir: Path, extra: list[str]) -> None:
    subprocess.run(["tinylora", "train", "--model", path, "--out", str(run_dir), *extra], check=True)
    s = json.loads((run_dir / "summary.json").read_text())
    rec = {"backbone": name, "path": path, "kind": "grpo", "params": s["trainable_parameters"],
           "gain": s["accuracy_after"] - s["accuracy_before"], "detail": s}
    with out.open("a") as fh:
        fh.write(json.dumps(rec) + "\n")


def plot(records: list[dict], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    names = list(dict.fromkeys(r["backbone"] for r in records))
    for i, name in enumerate(names):
        probe = sorted((r["params"], 100 * r["gain"]) for r in records if r["backbone"] == name and r["kind"] == "probe")
        grpo = sorted((r["params"], 100 * r["gain"]) for r in records if r["backbone"] == name and r["kind"] == "grpo")
        if probe:
            ax.plot(*zip(*probe), "-o", color=f"C{i}", label=f"{name}: probe (supervised)")
        if grpo:
            ax.plot(*zip(*grpo), "s", ms=9, mfc="none", mew=2, color=f"C{i}", label=f"{name}: GRPO")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("trained parameters")
    ax.set_ylabel("free greedy accuracy gain (points)")
    ax.set_title("Programmability of toy backbones")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    print(f"wrote {png}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backbone", action="append", default=[], metavar="NAME=DIR")
    ap.add_argument("--params", default="1,13,52,364", help="probe budgets (comma-separated; \"\" for none)")
    ap.add_argument("--grpo", default="", metavar="ARGS", help="extra `tinylora train` arguments for the GRPO run")
    ap.add_argument("--no-grpo", action="store_true")
    ap.add_argument("--out", default="programmability.jsonl")
    ap.add_argument("--runs", default="runs/programmability", help="folder for the GRPO run directories")
    ap.add_argument("--png", default="docs/programmability.png")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--plot-only", action="store_true")
    a = ap.parse_args()
    out = Path(a.out)
    if not a.plot_only:
        for spec in a.backbone:
            name, _, path = spec.partition("=")
            if not path:
                ap.error(f"--backbone wants NAME=DIR, got {spec!r}")
            have = {(r["kind"], r["params"]) for r in done(out) if r["backbone"] == name}
            for params in (int(x) for x in a.params.split(",") if x):  # --params "": the GRPO run only
                if ("probe", params) not in have:
                    run_probe(name, path, params, out, a.threads)
            if not a.no_grpo and not any(k == "grpo" for k, _ in have):
                run_grpo(name, path, out, Path(a.runs) / name, a.grpo.split())
    plot(done(out), Path(a.png))


if __name__ == "__main__":
    main()
