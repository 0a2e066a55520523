"""A sweep's results: the table (results.csv/json), the accuracy-vs-bytes plot and report.md."""

from __future__ import annotations

import csv
import json
import shlex
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .sweep import SweepConfig


def write_table(rows: list[dict[str, Any]], out: Path) -> None:
    (out / "results.json").write_text(json.dumps(rows, indent=2))
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with (out / "results.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)


def best_curves(rows: list[dict[str, Any]]) -> dict[str, list[tuple[int, float, float, float]]]:
    """line → [(bytes, accuracy, ci low, ci high)]. A line is method + algo (+ the sweep's ``series``
    values, + storage when rounded); per update size it keeps the configuration and learning rate
    with the best mean accuracy over seeds (the paper's selection) — measured on the selection split
    when the sweep has one (``select_accuracy``), otherwise on the reported split itself."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        config = r.get("config", "")  # the grid values but lr and seed: what seeds average over, lr is chosen
        groups.setdefault((r["method"], r["algo"], r.get("series", ""), r["storage"], r["bytes"], config, r["lr"]),
                          []).append(r)
    best: dict[tuple, tuple] = {}
    for (method, algo, series, storage, nbytes, _, _), rs in groups.items():
        def mean(key: str) -> float:
            return sum(r[key] for r in rs) / len(rs)

        chosen_by = mean("select_accuracy") if all(r.get("select_accuracy") is not None for r in rs) else mean("accuracy")
        key = (method, algo, series, storage, nbytes)
        if key not in best or chosen_by > best[key][0]:
            best[key] = (chosen_by, mean("accuracy"), mean("ci95_low"), mean("ci95_high"))
    curves: dict[str, list] = {}
    for (method, algo, series, storage, nbytes), (_, acc, lo, hi) in sorted(best.items(), key=lambda kv: kv[0][4]):
        name = f"{method} + {algo}" + (f" [{series}]" if series else "") + ("" if storage == "fp32" else f" ({storage})")
        curves.setdefault(name, []).append((nbytes, acc, lo, hi))
    return curves


def plot(rows: list[dict[str, Any]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.8), dpi=120)
    curves = best_curves(rows)
    families = sorted({name.split(" (")[0] for name in curves})  # method + algo: one colour each
    colours = {f: plt.get_cmap("tab10")(i % 10) for i, f in enumerate(families)}
    for name, pts in curves.items():
        family, stored = name.split(" (")[0], "(" in name  # rounded storage: dashed, hollow markers
        xs, ys = [p[0] for p in pts], [100 * p[1] for p in pts]
        err = [[100 * (p[1] - p[2]) for p in pts], [100 * (p[3] - p[1]) for p in pts]]
        ax.errorbar(xs, ys, yerr=err, marker="s" if stored else "o", capsize=3, label=name, color=colours[family],
                    linestyle="--" if stored else "-", markerfacecolor="white" if stored else colours[family])
    base = [r["accuracy_before"] for r in rows if r["accuracy_before"] is not None]
    if base:
        ax.axhline(100 * base[0], color="gray", linestyle="--", label="untrained base")
    ax.set_xscale("log")
    ax.set_xlabel("update size (bytes, log scale)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Accuracy against update size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def report(sweep: SweepConfig, rows: list[dict[str, Any]], command: str | None = None) -> Path:
    """``accuracy_vs_bytes.png``, ``report.md`` and the same as ``report.html`` in the sweep directory."""
    from ..evaluation import versions

    out = Path(sweep.out_dir)
    png = plot(rows, out / "accuracy_vs_bytes.png") if rows else None
    lines = ["# Sweep report", ""]
    if command:
        lines += ["```", command, "```", ""]
    if png:
        lines += [f"![accuracy against update size]({png.name})", ""]
        lines += ["What the plot shows (per line and update size: the best configuration and learning rate, "
                  "accuracy averaged over seeds):", "", "| line | bytes | accuracy | mean 95% CI |", "|---|---|---|---|"]
        for name, pts in best_curves(rows).items():
            lines += [f"| {name} | {b} | {100 * acc:.1f}% | {100 * lo:.1f}–{100 * hi:.1f}% |" for b, acc, lo, hi in pts]
        lines += ["", "Every run:", ""]
    sel = f" {sweep.select_split} |" if sweep.select_split else ""
    lines += ["| point | method | algo | storage | params | bytes | lr | seed | accuracy | 95% CI |" + sel,
              "|---" * (10 + bool(sel)) + "|"]
    for r in sorted(rows, key=lambda r: (r["method"], r["algo"], r["bytes"], r["lr"], r["point"], r["seed"])):
        extra = f" {100 * r['select_accuracy']:.1f}% |" if sel and r.get("select_accuracy") is not None else (" |" if sel else "")
        lines.append(f"| {r['point'].rsplit('-', 1)[0]} | {r['method']} | {r['algo']} | {r['storage']} | "
                     f"{r['trainable_parameters']} | {r['bytes']} | {r['lr']:g} | {r['seed']} | "
                     f"{100 * r['accuracy']:.1f}% | {100 * r['ci95_low']:.1f}–{100 * r['ci95_high']:.1f}% |" + extra)
    base = [r["accuracy_before"] for r in rows if r["accuracy_before"] is not None]
    if base:
        lines += ["", f"Untrained base: {100 * base[0]:.1f}%."]
    points = sweep.points()
    split = points[0].config(sweep.out_dir).eval_split
    if sweep.select_split:
        where = f"measured on the '{sweep.select_split}' split; the accuracies shown are on '{split}'."
    else:
        where = (f"measured on the '{split}' split it reports — set the sweep's select_split (e.g. validation) "
                 "for an unbiased choice.")
    lines += ["", f"{len(rows)} rows from {len({r['point'] for r in rows})} of {len(points)} points. Per update size "
              f"the plot keeps the learning rate with the best mean accuracy over seeds, {where}", "",
              "Sweep:", "```json", json.dumps(asdict(sweep), indent=2, default=str), "```", "",
              "Versions:", "```json", json.dumps(versions(), indent=2), "```"]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    (out / "report.html").write_text(_html(lines))
    return path


def _html(lines: list[str]) -> str:
    """The report's markdown subset (headings, fences, tables, images, paragraphs) as one HTML page."""
    import html

    out, in_code, in_table = [], False, False
    for ln in lines:
        if ln.startswith("```"):
            out.append("</pre>" if in_code else "<pre>")
            in_code = not in_code
            continue
        if in_code:
            out.append(html.escape(ln))
            continue
        if ln.startswith("|"):
            cells = [c.strip() for c in ln.strip("|").split("|")]
            if all(set(c) <= set("-") for c in cells):
                continue
            tag = "th" if not in_table else "td"
            out.append(("<table>" if not in_table else "") + "<tr>" + "".join(f"<{tag}>{html.escape(c)}</{tag}>"
                                                                            for c in cells) + "</tr>")
            in_table = True
            continue
        if in_table:
            out.append("</table>")
            in_table = False
        if ln.startswith("# "):
            out.append(f"<h1>{html.escape(ln[2:])}</h1>")
        elif ln.startswith("!["):
            alt, src = ln[2:].split("](")
            out.append(f'<img src="{html.escape(src.rstrip(")"))}" alt="{html.escape(alt)}" style="max-width:100%">')
        elif ln:
            out.append(f"<p>{html.escape(ln)}</p>")
    if in_table:
        out.append("</table>")
    style = "body{font-family:sans-serif;max-width:1100px;margin:2em auto}td,th{padding:2px 8px;border-bottom:1px solid #ddd}"
    return f"<!doctype html><meta charset=utf-8><title>Sweep report</title><style>{style}</style>\n" + "\n".join(out) + "\n"


def command_line() -> str:
    return " ".join(shlex.quote(a) for a in ["tinylora", *sys.argv[1:]])
