"""Where a run's numbers go besides ``metrics.jsonl`` (always written, the source of truth):
TensorBoard and Weights & Biases, as TRL, torchtune and verl users read their runs.

``report_to: [jsonl, tensorboard, wandb]`` in the config. Each logger gets the same scalars as
``metrics.jsonl`` (every number of a step's metrics: reward, accuracy, p_step, lr, fitness for ES …),
plus ‖v‖ (``adapter_norm``) and rollout tokens/s where a step has them, the config as
hyperparameters, and at the end the evaluations and ``curves.png``. Both are optional extras,
imported only when asked for; a missing one is a one-line error naming the extra, before the model
loads. wandb runs offline where there is no network (``WANDB_MODE=offline``); its run id is derived
from the run directory, so a resumed run continues the same wandb run.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from typing import Any

from ..tasks.rewards import MissingDependencyError

REPORTERS = ("jsonl", "tensorboard", "wandb")
_EXTRA = {"tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", "wandb")}  # name → (module, extra)


def check_available(names: list[str]) -> None:
    """Refuse an unknown logger, or one whose package is not installed (one line naming the extra)."""
    for name in names:
        if name not in REPORTERS:
            raise ValueError(f"report_to: unknown logger {name!r}; known: {', '.join(REPORTERS)}")
        if name in _EXTRA:
            module, extra = _EXTRA[name]
            if importlib.util.find_spec(module) is None:
                raise MissingDependencyError(f"report_to: {name} needs the {module} package: "
                                             f"pip install 'tinylora[{extra}]'")


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    out = {k: float(v) for k, v in metrics.items()
           if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}
    if metrics.get("rollout_tokens") and metrics.get("rollout_s"):
        out["tokens_per_s"] = metrics["rollout_tokens"] / metrics["rollout_s"]
    return out


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v if isinstance(v, (int, float, str, bool)) or v is None else str(v)
    return out


class Reporters:
    """The run's loggers other than jsonl; every method is a no-op when there are none."""

    def __init__(self, names: list[str], out: Path, config: dict[str, Any], *, resume_step: int = 0):
        check_available(names)
        self.tb = self.wandb = None
        if "tensorboard" in names:
            from torch.utils.tensorboard import SummaryWriter

            # a resumed run redoes the steps after its checkpoint: drop their earlier events
            self.tb = SummaryWriter(str(out / "tensorboard"), purge_step=resume_step or None)
            self.tb.add_text("config", "```\n" + "\n".join(f"{k}: {v}" for k, v in _flat(config).items()) + "\n```")
        if "wandb" in names:
            import wandb

            run_id = hashlib.sha256(str(out.resolve()).encode()).hexdigest()[:16]
            self.wandb = wandb.init(project="tinylora", name=out.name, id=run_id, resume="allow", dir=str(out),
                                    config=_flat(config), reinit="finish_previous")
        self._hparams = _flat(config)

    @property
    def active(self) -> bool:
        return self.tb is not None or self.wandb is not None

    def step(self, step: int, metrics: dict[str, Any], adapter_norm: float) -> None:
        values = {**_scalars(metrics), "adapter_norm": adapter_norm}
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(k, v, step)
        if self.wandb is not None:
            self.wandb.log(values, step=step)

    def finish(self, evals: dict[str, dict | None], curves_png: Path | None, final_step: int) -> None:
        """The evaluations (accuracy, and each mode: strict / flexible) and the curves image."""
        flat = {}
        for name, ev in evals.items():
            if not ev:
                continue
            flat[f"{name}/accuracy"] = ev["accuracy"]
            for mode, v in (ev.get("modes") or {}).items():
                flat[f"{name}/{mode}"] = v["accuracy"]
        if self.tb is not None:
            for k, v in flat.items():
                self.tb.add_scalar(k, v, final_step)
            hp = {k: v for k, v in self._hparams.items() if isinstance(v, (int, float, str, bool))}
            self.tb.add_hparams(hp, {f"hparam/{k}": v for k, v in flat.items()}, run_name=".")
            if curves_png is not None and Path(curves_png).is_file():
                from matplotlib.image import imread

                self.tb.add_image("curves", imread(str(curves_png))[:, :, :3], final_step, dataformats="HWC")
            self.tb.close()
        if self.wandb is not None:
            import wandb

            self.wandb.summary.update(flat)
            if curves_png is not None and Path(curves_png).is_file():
                self.wandb.log({"curves": wandb.Image(str(curves_png))}, step=final_step)
            self.wandb.finish()

    def close(self) -> None:
        """On an interruption: flush what was written (the run resumes into the same loggers)."""
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()
