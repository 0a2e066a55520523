"""A run directory: what it holds, the checks before a run starts or resumes in it, and the config a
resume continues with (a resume may extend a run; it may not change it)."""

from __future__ import annotations

from pathlib import Path

from .config import TrainConfig

# What a run directory holds (a fresh run may start in a folder holding only these, e.g. one that was
# killed before its first step); anything else is the user's and is never written over.
RUN_FILES = {"config.yaml", "resolved.json", "versions.json", "metrics.jsonl", "completions.jsonl", "latest",
             "latest.tmp", "eval_before", "eval_after", "adapter.safetensors", "summary.json", "curves.png",
             "sweep_point.json", "tensorboard", "wandb"}


def _is_run_file(name: str) -> bool:
    return name in RUN_FILES or name.startswith(("ckpt-", "eval_after_", "select_"))


def check_run_dir(out: str | Path, resume: bool) -> None:
    """Refuse, before anything slow, a new run into a run directory or into a folder of other files,
    and a resume of a folder that is not a run or has no checkpoint."""
    out = Path(out)
    if resume:
        if not (out / "config.yaml").is_file():
            raise ValueError(f"{out} is not a run directory (a run directory, written by tinylora train, holds config.yaml, "
                             "metrics.jsonl, ckpt-N/ checkpoints and a 'latest' pointer); nothing to resume")
        if not (out / "latest").is_file():
            raise ValueError(f"{out} has no checkpoint to resume from (no 'latest' file: the run stopped before its "
                             "first checkpoint, or was made with checkpoint_every=0); start it again in a new out_dir")
    elif (out / "latest").exists() or (out / "metrics.jsonl").exists():
        raise ValueError(f"{out} already holds a run; resume it with --resume {out} (when it has a checkpoint), "
                         "or choose another out_dir")
    elif out.exists() and not out.is_dir():
        raise ValueError(f"out_dir {out} is a file, not a folder")
    elif out.is_dir():
        other = sorted(p.name for p in out.iterdir() if not _is_run_file(p.name))
        if other:
            shown = ", ".join(other[:3]) + (f" and {len(other) - 3} more" if len(other) > 3 else "")
            raise ValueError(f"out_dir {out} holds files that are not a tinylora run ({shown}); "
                             "choose a new or empty folder")


# Settings a resume may change: they cannot change the trained numbers' meaning (--threads is a
# command-line option, warned about when it differs; steps only grows, and is recorded).
def resumed_config(run: str | Path, overrides: list[str], flags: list[str] = ()) -> TrainConfig:
    """The config a resume of ``run`` continues with: the recorded one, unchanged, except ``steps=N``
    (N at least the recorded steps: the run is extended). Anything else is refused by name."""
    run = Path(run)
    check_run_dir(run, resume=True)
    if flags:
        raise ValueError(f"--resume continues {run} exactly as it was configured; {', '.join(flags)} would change "
                         "it (a resume takes only steps=N, to extend the run, and --threads)")
    cfg = TrainConfig.from_yaml(run / "config.yaml")
    other = [o for o in overrides if o.partition("=")[0].strip() != "steps"]
    if other:
        raise ValueError(f"--resume continues {run} exactly as it was configured; {', '.join(other)} would change "
                         "the run's record (a resume takes only steps=N, to extend the run, and --threads)")
    if overrides:
        import yaml

        steps = yaml.safe_load(overrides[-1].partition("=")[2])
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < cfg.steps:
            raise ValueError(f"steps={overrides[-1].partition('=')[2]}: a resume can only extend the run "
                             f"(it was configured for {cfg.steps} steps)")
        if steps != cfg.steps and cfg.schedule == "cosine":
            raise ValueError(f"steps={steps}: the run's cosine schedule is set by its {cfg.steps} steps; extending it "
                             "would change the learning rates of the steps still to come, so it is refused")
        cfg = TrainConfig.from_dict({**cfg.to_dict(), "steps": steps})
    if Path(cfg.out_dir).resolve() != run.resolve():  # the folder was moved: it is still this run
        cfg.out_dir = str(run)
    return cfg
