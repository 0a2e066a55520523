"""`tinylora train`: GRPO, SFT or ES training."""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

from .._core.dtypes import BASE_DTYPES
from .options import (
    MODEL_HELP,
    add_no_cache,
    add_threads,
    check_model,
    launch,
    parse_kv,
    strip_nproc,
)


def train_config_from_args(args: argparse.Namespace):
    """The run's TrainConfig: the embedded default, --config or the resumed run's config, then the
    shorthand flags (--algo, --device, --model, --task, --out) and key=value overrides."""
    from ..trainers.base import check_run_dir, resumed_config
    from ..trainers.config import TrainConfig, apply_overrides

    overrides = list(args.overrides)
    if args.resume:
        return resumed_config(args.resume, overrides, [f"--{f}" for f in ("config", "algo", "device", "dtype", "model",
                                                                          "task", "out") if getattr(args, f, None) is not None]
                              + (["--task-arg"] if args.task_arg else []))
    for flag, key in (("algo", "algo"), ("device", "device"), ("dtype", "dtype"), ("model", "model"),
                      ("task", "task"), ("out", "out_dir")):
        value = getattr(args, flag, None)
        if value is not None:
            if any(o.startswith(f"{key}=") for o in overrides):
                raise ValueError(f"--{flag} and {key}=… both given; use one")
            overrides = [f"{key}={json.dumps(value)}", *overrides]
    for k, v in parse_kv(args.task_arg).items():  # --task-arg k=v, as on eval: the same as task_args.k=v
        overrides.append(f"task_args.{k}={json.dumps(v)}")
    if args.config:
        cfg = TrainConfig.from_yaml(args.config, overrides)
    else:
        cfg = TrainConfig.from_dict(apply_overrides(TrainConfig().to_dict(), overrides))
    check_run_dir(cfg.out_dir, resume=False)  # before the model loads
    return cfg


def _cmd_train(args: argparse.Namespace) -> int:
    from ..trainers import make_trainer
    from ..trainers.base import format_report

    if args.nproc is not None:
        return launch(args.nproc, strip_nproc(args.argv))
    from .._core.threads import set_threads

    cfg = train_config_from_args(args)
    check_model(cfg.model)
    threads = set_threads(args.threads)
    if args.resume:
        _warn_if_threads_changed(Path(args.resume), threads)
    trainer = make_trainer(cfg)
    cma = cfg.algo == "es" and cfg.es_config().method == "cma"  # CMA-ES sets its own steps: no lr
    lr = "" if cma else f", lr {cfg.learning_rate():g}"
    if cfg.algo == "es":
        es = cfg.es_config()
        samples = (f" × {trainer.members} members ({es.method}, σ {es.sigma:g}, "
                   + (f"{es.samples} samples per prompt)" if es.samples else "greedy)"))
    elif cfg.algo == "grpo" or cfg.sft_source == "rejection":
        samples = f" × {cfg.group_size} samples"
    else:
        samples = " (reference solutions)"
    dist = trainer.dist
    if dist.is_main:
        ranks = f" on {dist.world} ranks ({dist.device.type})" if dist.active else f" on {dist.device}"
        print(f"tinylora train: {cfg.algo} on {cfg.task} with {cfg.model}, adapter {cfg.adapter}, "
              f"{cfg.steps} steps × {cfg.prompts_per_step} prompts{samples}{lr}{ranks}, "
              f"{threads} thread{'s' if threads > 1 else ''}{' per rank' if dist.active else ''}; "
              f"run directory {cfg.out_dir}", flush=True)
    try:
        summary = trainer.train(resume=bool(args.resume))
    except KeyboardInterrupt:
        return 130
    if dist.is_main:
        print(format_report(summary))
    return 0


def _warn_if_threads_changed(run: Path, threads: int) -> None:
    """Threads change float sums, so the continued run's numbers may differ in their last bits from an
    uninterrupted one; allowed (a run may move machines), said, and recorded in resolved.json."""
    try:
        before = json.loads((run / "resolved.json").read_text())["stretches"][-1]["threads"]
    except (OSError, ValueError, KeyError, IndexError):
        return
    if before != threads:
        warnings.warn(f"the run used {before} threads and continues with {threads}: float sums change, so it is no "
                      "longer bit-identical to an uninterrupted run (recorded in resolved.json)")


def add_parser(sub) -> None:
    s = sub.add_parser(
        "train", help="GRPO (the main job), SFT or ES training; no arguments: 13 parameters on the toy world",
        description="Train an adapter with GRPO and a verifiable reward, with SFT (--algo sft) on the task's "
                    "reference solutions (or, sft_source=rejection, on the model's own correct samples), or with "
                    "evolution strategies (--algo es; es.method=openai|cma, es.sigma, es.population: the reward "
                    "itself, greedy by default, no gradients; tinylora and lora_xs only). With no "
                    "arguments: GRPO with the shipped toy backbone on the arith task with TinyLoRA u=13 tied 'all' "
                    "(13 parameters), evaluated before and after. Every hyperparameter is a key of one config (see "
                    "configs/); override with key=value, nested keys with dots (adapter.u=4).")
    s.add_argument("--config", help="YAML config (configs/toy-grpo.yaml is the default run)")
    s.add_argument("--algo", choices=["grpo", "sft", "es"], help="shorthand for the override algo=… (es: evolution "
                                                                "strategies, es.method=openai|cma)")
    s.add_argument("--model", help="shorthand for model=… (" + MODEL_HELP + ")")
    s.add_argument("--task", help="shorthand for task=…")
    s.add_argument("--out", help="shorthand for out_dir=… (the run directory)")
    s.add_argument("--device", choices=["cpu", "cuda", "auto"],
                   help="shorthand for device=… (default auto: CUDA when present; one GPU per rank under torchrun)")
    s.add_argument("--dtype", choices=BASE_DTYPES, help="shorthand for dtype=… (the frozen base's dtype; the "
                                                        "adapter and optimizer stay fp32)")
    s.add_argument("--task-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="task option, as on eval (= task_args.KEY=VALUE), e.g. mode=strict")
    s.add_argument("--nproc", type=int, metavar="N",
                   help="data parallel on this machine: run the same command under torchrun with N processes "
                        "(= torchrun --standalone --nproc-per-node N -m tinylora train …); for several machines "
                        "call torchrun yourself")
    s.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    s.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. steps=100 lr=0.01 adapter.u=4")
    add_threads(s)
    add_no_cache(s)
    s.set_defaults(func=_cmd_train)
