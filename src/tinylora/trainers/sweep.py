"""Sweeps: a grid of training runs, each a normal run directory, and the accuracy-vs-bytes report.

A sweep file holds a ``base`` (TrainConfig keys, dotted for nested ones) and a ``grid`` (dotted
key → list of values); every combination is one point. Points run one after another (or are
split across processes with ``shard="i/n"``); a finished point (``sweep_point.json``) is skipped,
one with a checkpoint is resumed, so re-running a sweep after a kill finishes only what is left.

Storage precision: v is trained in fp32; ``storage_dtypes`` also evaluates the same trained values
rounded to bf16 / fp16, each a row of its own with its own byte count.

Model selection: with ``select_split`` (e.g. ``validation``) every point is also evaluated on that
split, and the best learning rate per update size is chosen there, then reported on ``eval_split``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .._core.dtypes import DTYPE_NAMES as STORAGE_DTYPES
from .._core.dtypes import torch_dtype
from .config import TrainConfig, apply_overrides
from .sweep_report import best_curves, command_line, plot, report, write_table  # noqa: F401  (the sweep API)


@dataclass
class SweepConfig:
    base: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    out_dir: str = "runs/sweep"
    storage_dtypes: list[str] = field(default_factory=lambda: ["fp32"])
    select_split: str | None = None  # where the best lr per size is chosen; None: on eval_split itself
    series: list[str] = field(default_factory=list)  # grid keys that make separate lines (e.g. adapter.r)

    def __post_init__(self) -> None:
        for key, values in self.grid.items():
            if not isinstance(values, list) or not values:
                raise ValueError(f"grid key {key!r} needs a non-empty list of values, got {values!r}")
        if any(k not in self.grid for k in self.series):
            raise ValueError(f"series keys must be grid keys, got {self.series} (grid: {list(self.grid)})")
        bad = [d for d in self.storage_dtypes if d not in STORAGE_DTYPES]
        if bad or not self.storage_dtypes:
            raise ValueError(f"storage_dtypes must be a non-empty subset of {STORAGE_DTYPES}, got {self.storage_dtypes}")
        _check_keys({**_flat(self.base), **self.grid})
        for point in self.points():  # every point must be a valid TrainConfig, before anything runs
            cfg = point.config(self.out_dir)
            if self.select_split is not None and self.select_split == cfg.eval_split:
                raise ValueError(f"select_split {self.select_split!r} is the split the sweep reports (eval_split); "
                                 "choosing on it would bias the report — use a validation split")

    @classmethod
    def from_yaml(cls, path: str | Path) -> SweepConfig:
        from ..adapters.config import read_yaml

        data = read_yaml(path)
        known = {"base", "grid", "out_dir", "storage_dtypes", "select_split", "series"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown sweep key(s) {unknown}; known: {', '.join(sorted(known))}")
        return cls(**data)

    def points(self) -> list[Point]:
        """The grid's combinations. Adapter keys that the point's method does not have (``u`` for
        ``lora``, ``r`` for ``full``), ``sft_source`` for non-SFT points and ``es.*`` for non-ES points, are
        dropped from that point,
        and the duplicates this makes are kept once, so one grid can cross methods and algorithms."""
        keys = list(self.grid)
        out, seen = [], set()
        for combo in itertools.product(*(self.grid[k] for k in keys)):
            values = dict(zip(keys, combo))
            values = _applicable(values, {**_flat(self.base), **values})
            sig = json.dumps(values, sort_keys=True, default=str)
            if sig not in seen:
                seen.add(sig)
                out.append(Point(self.base, values))
        return out


def _method_of(merged: dict[str, Any]) -> str:
    whole = merged.get("adapter")
    return merged.get("adapter.method") or (whole or {}).get("method") or "tinylora"


def _applicable(values: dict[str, Any], merged: dict[str, Any]) -> dict[str, Any]:
    """``values`` without the keys the point (``merged``: base + values) does not use: ``adapter.*``
    keys its method lacks, ``sft_source`` unless its algo is sft, ``es.*`` unless it is es."""
    known = _adapter_fields(_method_of(merged))
    algo = merged.get("algo", "grpo")
    return {k: v for k, v in values.items()
            if (not k.startswith("adapter.") or k[len("adapter."):] in known) and (k != "sft_source" or algo == "sft")
            and (not k.startswith("es.") or algo == "es")}


def _check_keys(keys) -> None:
    """A key that no method (``adapter.*``), no ES setting (``es.*``) or no config field has is a typo:
    refused, naming the known ones, because :func:`_applicable` drops keys per point without a word."""
    import dataclasses

    from ..adapters.config import CONFIG_CLASSES
    from .config import ESConfig

    adapter = set().union(*(_adapter_fields(m) for m in CONFIG_CLASSES))
    es = {f.name for f in dataclasses.fields(ESConfig)}
    top = {f.name for f in dataclasses.fields(TrainConfig)}
    for key in keys:
        head, _, rest = key.partition(".")
        if head == "task_args" and rest:  # the task's own options: the task checks them
            continue
        known = {"adapter": adapter, "es": es}.get(head) if rest else top
        if known is None:
            raise ValueError(f"sweep key {key!r}: {head!r} has no sub-keys (only adapter.*, es.* and task_args.* do)")
        if (rest or key) not in known:
            raise ValueError(f"unknown sweep key {key!r}; known{' ' + head + '.*' if rest else ''}: "
                             f"{', '.join(sorted(known))}")


def _adapter_fields(method: str) -> set[str]:
    import dataclasses

    from ..adapters.config import CONFIG_CLASSES

    if method not in CONFIG_CLASSES:
        raise ValueError(f"unknown adapter method {method!r} in the sweep; expected one of {sorted(CONFIG_CLASSES)}")
    return {"method"} | {f.name for f in dataclasses.fields(CONFIG_CLASSES[method])}


@dataclass
class Point:
    base: dict[str, Any]
    values: dict[str, Any]  # the grid coordinates of this point

    @property
    def id(self) -> str:
        """Readable and unique: the grid values, then a hash of the full override set."""
        digest = hashlib.sha256(json.dumps([self.base, self.values], sort_keys=True, default=str).encode()).hexdigest()
        name = "-".join(f"{k.split('.')[-1]}=" + ("_".join(str(x) for x in v.values()) if isinstance(v, dict) else str(v))
                        for k, v in self.values.items())
        safe = "".join(c if c.isalnum() or c in "=-_." else "_" for c in name)[:80]
        return f"{safe}-{digest[:8]}" if self.values else digest[:8]

    def config(self, sweep_dir: str) -> TrainConfig:
        base = _flat(self.base)
        if "adapter" in self.values:  # a whole adapter section in the grid replaces the base's
            base = {k: v for k, v in base.items() if not k.startswith("adapter")}
        merged = {**base, **self.values}
        merged = _applicable(merged, merged)
        data = TrainConfig().to_dict()
        if any(k.startswith("adapter.") for k in merged):
            # the adapter is what the sweep says, not the default's leftovers; with no method named, the
            # default method (and its dataclass defaults) apply
            data["adapter"] = {"method": _method_of(merged)}
        data = apply_overrides(data, [f"{k}={json.dumps(v)}" for k, v in merged.items()])
        data["out_dir"] = str(Path(sweep_dir) / "points" / self.id)
        return TrainConfig.from_dict(data)


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and k == "adapter":  # the adapter section is merged key by key
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def parse_shard(shard: str | None) -> tuple[int, int]:
    if not shard:
        return 0, 1
    try:
        i, n = (int(x) for x in shard.split("/"))
    except ValueError:
        raise ValueError(f"shard must look like i/n (e.g. 0/2), got {shard!r}") from None
    if not 0 <= i < n:
        raise ValueError(f"shard i/n needs 0 <= i < n, got {shard!r}")
    return i, n


def run_sweep(sweep: SweepConfig, shard: str | None = None, progress: bool = True) -> list[dict[str, Any]]:
    """Run (or resume) this shard's points, then rebuild the results table from every finished point."""
    from . import make_trainer

    i, n = parse_shard(shard)
    out = Path(sweep.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.json").write_text(json.dumps(asdict(sweep), indent=2, default=str))
    points = sweep.points()
    mine = [p for k, p in enumerate(points) if k % n == i]
    for k, point in enumerate(mine):
        cfg = point.config(sweep.out_dir)
        run_dir = Path(cfg.out_dir)
        if (run_dir / "sweep_point.json").exists():  # written last: the point is finished
            continue
        if progress:
            print(f"[sweep {k + 1}/{len(mine)}] {point.id}", flush=True)
        resume = (run_dir / "latest").exists()
        if run_dir.exists() and not resume:
            shutil.rmtree(run_dir)  # an unfinished point without a checkpoint starts over
        t0 = time.time()
        trainer = make_trainer(cfg, progress=progress)
        trainer.train(resume=resume)
        extra = {"seconds": round(time.time() - t0, 1),
                 "storage": storage_evals(trainer, sweep.storage_dtypes, sweep.select_split)}
        (run_dir / "sweep_point.json").write_text(json.dumps({"values": point.values, **extra}, indent=2))
    rows = collect(sweep)
    write_table(rows, out)
    return rows


def storage_evals(trainer, dtypes: list[str], select_split: str | None = None) -> dict[str, dict[str, Any]]:
    """The trained values rounded to each storage dtype: accuracy (and on ``select_split``) and exact bytes."""
    import torch

    from ..adapters.model import update_bytes

    out = {}
    saved = [p.detach().clone() for p in trainer.params]
    try:
        for dt in dtypes:
            with torch.no_grad():  # from the trained fp32 values each time, whatever the order
                for p, s in zip(trainer.params, saved):
                    p.copy_(s if dt == "fp32" else s.to(torch_dtype(dt)).to(s.dtype))
            if dt == "fp32":
                acc = json.loads((trainer.out / "eval_after" / "summary.json").read_text())
            else:
                acc = trainer.evaluate(f"eval_after_{dt}")
            out[dt] = {"accuracy": acc["accuracy"], "ci95": acc["ci95"], "bytes": update_bytes(trainer.model, dt)}
            if select_split:
                sel = trainer.evaluate(f"select_{select_split}_{dt}", split=select_split)
                out[dt]["select_accuracy"] = sel["accuracy"]
    finally:
        with torch.no_grad():
            for p, s in zip(trainer.params, saved):
                p.copy_(s)
    return out


def collect(sweep: SweepConfig) -> list[dict[str, Any]]:
    """One row per finished point × storage dtype."""
    rows = []
    for point in sweep.points():
        cfg = point.config(sweep.out_dir)
        run_dir = Path(cfg.out_dir)
        if not (run_dir / "sweep_point.json").exists():
            continue
        summary = json.loads((run_dir / "summary.json").read_text())
        extra = json.loads((run_dir / "sweep_point.json").read_text())
        for dt, ev in extra["storage"].items():
            rows.append({
                "point": point.id, **point.values, "method": summary["method"],
                "algo": cfg.algo + ("-rejection" if cfg.algo == "sft" and cfg.sft_source == "rejection" else "")
                + (f"-{cfg.es['method']}" if cfg.algo == "es" else ""),
                "lr": cfg.learning_rate(), "seed": cfg.seed, "storage": dt,
                "series": ", ".join(f"{k.split('.')[-1]}={point.values[k]}" for k in sweep.series if k in point.values),
                "config": json.dumps({k: v for k, v in point.values.items() if k not in ("lr", "seed")},
                                     sort_keys=True, default=str),
                "trainable_parameters": summary["trainable_parameters"], "bytes": ev["bytes"],
                "accuracy_before": summary["accuracy_before"], "accuracy": ev["accuracy"],
                "ci95_low": ev["ci95"][0], "ci95_high": ev["ci95"][1], "select_accuracy": ev.get("select_accuracy"),
                "seconds": extra["seconds"],
                "run_dir": str(run_dir),
            })
    return rows
