"""`tinylora eval`: evaluate a model (and adapter) on a task."""

from __future__ import annotations

import argparse
from pathlib import Path

from .._core.dtypes import BASE_DTYPES, resolve_dtype
from ..generation import ENGINES
from .options import (
    MODEL_HELP,
    add_no_cache,
    add_threads,
    check_model,
    launch,
    parse_kv,
    strip_nproc,
)


def _cmd_eval(args: argparse.Namespace) -> int:
    import torch

    if args.nproc is not None:
        return launch(args.nproc, strip_nproc(args.argv))

    from .. import tasks
    from .._core import distributed
    from .._core.threads import set_threads

    set_threads(args.threads)
    from ..adapters.file import load, read
    from ..evaluation import check_eval_args, evaluate
    from ..models.loading import load_model, load_tokenizer

    apply_run_defaults(args)  # --run DIR: the run's model, task, adapter and evaluation settings
    torch.manual_seed(args.seed)
    check_eval_args(limit=args.limit, samples=args.samples, temperature=args.temperature, batch_size=args.batch_size,
                    max_new_tokens=args.max_new_tokens, out_dir=args.out)  # all before the slow load
    check_model(args.model)
    if args.engine == "vllm":
        from ..generation import vllm_engine

        vllm_engine.require()  # absent: the install hint now, not after the load
    if args.adapter:
        read(args.adapter)  # a missing file, or not an adapter: said now, not after the model loads
    task_kwargs = {**args.run_task_args, **parse_kv(args.task_arg)}
    if args.data_dir:
        task_kwargs["data_dir"] = args.data_dir
    task = tasks.get(args.task, **task_kwargs)
    dist = distributed.init(args.device)  # under torchrun: the examples are split across ranks
    tokenizer = load_tokenizer(args.model)  # first: a folder without one is named before the slow load
    dtype, why = resolve_dtype(args.dtype, str(dist.device))
    if args.dtype == "auto" and dist.is_main:
        print(f"tinylora eval: dtype auto → {dtype} ({why})", flush=True)
    model = load_model(args.model, dtype=dtype, device=str(dist.device))
    if args.adapter:
        load(model, args.adapter)
    summary = evaluate(model, tokenizer, task, split=args.split, limit=args.limit, samples=args.samples,
                       temperature=args.temperature, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                       seed=args.seed, out_dir=args.out, model_name=args.model, adapter=args.adapter, engine=args.engine,
                       progress=dist.is_main, dist=dist)
    if not dist.is_main:
        return 0
    from ..evaluation import format_summary

    print(f"{task.name} {args.split}: " + format_summary(summary))
    if args.out:
        print(f"per-example results and summary in {args.out}")
    return 0


# the option defaults when neither the command line nor --run's config sets them
_DEFAULTS = {"split": "test", "batch_size": 8, "max_new_tokens": 256, "dtype": "fp32", "engine": "auto"}


def apply_run_defaults(args: argparse.Namespace) -> None:
    """Fill what the command line left unset: from ``--run DIR`` (the run's config: model, task and
    its options, the adapter it wrote, its evaluation split, limit, length, batch, dtype and engine),
    else the plain defaults. An option given explicitly always wins."""
    args.run_task_args = {}
    if args.run:
        from ..trainers.config import TrainConfig

        run = Path(args.run)
        if not (run / "config.yaml").is_file():
            raise ValueError(f"--run {run}: not a run directory (no config.yaml)")
        cfg = TrainConfig.from_yaml(run / "config.yaml")
        adapter = run / "adapter.safetensors"
        if args.adapter is None and not adapter.is_file():
            raise ValueError(f"--run {run}: the run has not written adapter.safetensors yet (unfinished); "
                             "resume it, or give --adapter")
        taken = {"model": cfg.model, "task": cfg.task, "adapter": str(adapter), "split": cfg.eval_split,
                 "limit": cfg.eval_limit, "batch_size": cfg.eval_batch_size, "max_new_tokens": cfg.eval_max_new_tokens,
                 "dtype": cfg.dtype, "engine": cfg.rollout_engine}
        for key, value in taken.items():
            if getattr(args, key) is None:
                setattr(args, key, value)
        args.run_task_args = dict(cfg.task_args)
    for key, value in _DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.model is None or args.task is None:
        raise ValueError("eval needs --model and --task (or --run DIR, whose config names them)")


def add_parser(sub) -> None:
    from .. import tasks

    s = sub.add_parser("eval", help="evaluate a model (optionally with an adapter) on a task",
                       description="Batched generation, scored by the task's own checker; greedy pass@1 by default, "
                                   "sampled pass@k with --samples K --temperature T. Resumable with --out.")
    s.add_argument("--model", help=MODEL_HELP + " (required unless --run)")
    s.add_argument("--task", help=f"one of {tasks.names()} (required unless --run)")
    s.add_argument("--run", metavar="RUN_DIR", help="evaluate a training run's adapter with the run's own settings "
                                                    "(model, task and options, eval split, limit, lengths, dtype); "
                                                    "any option given here overrides them")
    s.add_argument("--adapter", help="adapter .safetensors file to load into the model")
    s.add_argument("--split", help="default test")
    s.add_argument("--limit", type=int, help="first N examples only")
    s.add_argument("--samples", type=int, default=1, help="completions per prompt (pass@k); >1 needs --temperature")
    s.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    s.add_argument("--batch-size", type=int, help="default 8")
    s.add_argument("--max-new-tokens", type=int, help="default 256")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", help="folder for examples.jsonl and summary.json; re-running resumes")
    s.add_argument("--data-dir", help="local data: DIR/<split>.jsonl or DIR/<task>/<split>.jsonl (no hub needed)")
    s.add_argument("--task-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="task option, e.g. mode=strict (gsm8k), path=FILE reward=numeric (jsonl)")
    s.add_argument("--dtype", choices=BASE_DTYPES, help="the base's dtype (default fp32; auto: bf16 where this "
                   "machine has bf16 units and they measure faster, else fp32; the adapter stays fp32)")
    s.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (CUDA when present); under torchrun "
                                                     "each rank takes its share of the examples")
    s.add_argument("--nproc", type=int, metavar="N", help="split the examples over N processes on this machine "
                                                           "(runs the same command under torchrun)")
    add_threads(s)
    add_no_cache(s)
    s.add_argument("--engine", choices=ENGINES,
                   help="decode loop (default auto): ours (tinylora; auto = ours for Llama/Qwen2/GPT-2/Mistral/Qwen3), ours with "
                        "static shapes (static: its decode step a CUDA graph on a GPU, unverified) or transformers "
                        "generate (hf); all give the same tokens; or vLLM (vllm: the base in vLLM, the "
                        "adapter as a LoRA; optional, see the README; greedy agrees up to bf16/fp32 ties)")
    s.set_defaults(func=_cmd_eval)
