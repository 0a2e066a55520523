"""`tinylora eval`: evaluate a model (and adapter) on a task."""

from __future__ import annotations

import argparse

from .._core.dtypes import DTYPE_NAMES
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

    torch.manual_seed(args.seed)
    check_eval_args(limit=args.limit, samples=args.samples, temperature=args.temperature, batch_size=args.batch_size,
                    max_new_tokens=args.max_new_tokens, out_dir=args.out)  # all before the slow load
    check_model(args.model)
    if args.adapter:
        read(args.adapter)  # a missing file, or not an adapter: said now, not after the model loads
    task_kwargs = parse_kv(args.task_arg)
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
    from ..evaluation import format_summary

    print(f"{task.name} {args.split}: " + format_summary(summary))
    if args.out:
        print(f"per-example results and summary in {args.out}")
    return 0


def add_parser(sub) -> None:
    from .. import tasks

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
    s.add_argument("--dtype", default="fp32", choices=DTYPE_NAMES)
    s.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (CUDA when present); under torchrun "
                                                     "each rank takes its share of the examples")
    s.add_argument("--nproc", type=int, metavar="N", help="split the examples over N processes on this machine "
                                                           "(runs the same command under torchrun)")
    add_threads(s)
    add_no_cache(s)
    s.add_argument("--engine", choices=ENGINES, default="auto",
                   help="decode loop: ours (tinylora; auto = ours for Llama/Qwen2/GPT-2/Mistral/Qwen3), ours with "
                        "static shapes (static: its decode step a CUDA graph on a GPU, unverified) or transformers "
                        "generate (hf); all give the same tokens")
    s.set_defaults(func=_cmd_eval)
