"""A run's curves: a terminal sparkline for the report, and ``curves.png`` in the run directory."""

from __future__ import annotations

import math
from pathlib import Path

BARS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float], width: int = 40, lo: float | None = None, hi: float | None = None) -> str:
    """One character per bin (the mean of its values), scaled between ``lo`` and ``hi`` (default: data range)."""
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not vals:
        return ""
    n = min(width, len(vals))
    bins = [vals[i * len(vals) // n:(i + 1) * len(vals) // n] for i in range(n)]
    means = [sum(b) / len(b) for b in bins]
    lo = min(means) if lo is None else lo
    hi = max(means) if hi is None else hi
    if hi - lo < 1e-12:
        return BARS[len(BARS) // 2] * n
    return "".join(BARS[min(len(BARS) - 1, max(0, int((m - lo) / (hi - lo) * len(BARS))))] for m in means)


# (metric key, panel title); a panel is drawn when the metrics have the key
PANELS = [("reward_mean", "reward (mean over samples)"), ("loss", "loss"), ("accuracy", "accuracy (training batch)"),
          ("response_length", "response length (tokens)"), ("kl", "KL to the base"), ("grad_norm", "gradient norm")]


def write_curves_png(metrics: list[dict], path: str | Path, evals: dict[int, float] | None = None,
                     title: str = "", extra_panels: dict[str, str] | None = None) -> Path:
    """Plot every available metric against step; held-out accuracy (``evals``: step → accuracy) on the
    accuracy panel as points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(k, t) for k, t in [*PANELS, *(extra_panels or {}).items()] if any(k in m for m in metrics)]
    cols = 3
    rows = max(1, math.ceil(len(panels) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    steps = [m["step"] for m in metrics]
    for ax, (key, label) in zip(axes.flat, panels):
        ax.plot([s for s, m in zip(steps, metrics) if key in m], [m[key] for m in metrics if key in m], lw=1.2)
        if key == "accuracy" and evals:
            ax.plot(list(evals), list(evals.values()), "o", color="C3", label="held-out (greedy)")
            ax.legend(fontsize=8)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
