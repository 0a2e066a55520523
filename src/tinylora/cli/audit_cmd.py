"""`tinylora audit`: what an adapter changes — off-task drift, on-task effect, behaviour probes."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .._core.dtypes import BASE_DTYPES, resolve_dtype
from ..generation import ENGINES
from .options import MODEL_HELP, add_no_cache, add_threads, check_model, parse_kv


def _cmd_audit(args: argparse.Namespace) -> int:
    from .._core.threads import set_threads
    from ..adapters.file import load, read
    from ..audit import audit, format_report, load_prompts

    # everything that can be wrong with the input, before the slow load
    info = read(args.adapter)  # missing, corrupt, not an adapter: one line
    check_model(args.model)
    load_prompts(args.reference)
    if args.probes != "none":
        load_prompts(args.probes)
    for name in ("limit", "max_new_tokens", "probe_tokens", "task_tokens", "batch_size"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {v}")
    if args.out:
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise ValueError(f"--out {out} is a file, not a folder")
    task = None
    if args.task:
        from .. import tasks

        kwargs = parse_kv(args.task_arg)
        if args.data_dir:
            kwargs["data_dir"] = args.data_dir
        task = tasks.get(args.task, **kwargs)
    set_threads(args.threads)
    import torch

    from ..models.loading import load_model, load_tokenizer

    torch.manual_seed(0)
    tokenizer = load_tokenizer(args.model)
    dtype, why = resolve_dtype(args.dtype, "cpu")
    if args.dtype == "auto":
        print(f"tinylora audit: dtype auto → {dtype} ({why})", flush=True)
    model = load_model(args.model, dtype=dtype, device="cpu")
    load(model, args.adapter)  # another base, another architecture: one line (AdapterError)
    report = audit(model, tokenizer, info=info, reference=args.reference,
                   probes=None if args.probes == "none" else args.probes, task=task, split=args.split,
                   limit=args.limit, max_new_tokens=args.max_new_tokens, probe_tokens=args.probe_tokens,
                   task_tokens=args.task_tokens, batch_size=args.batch_size, engine=args.engine,
                   progress=not args.json)
    report["base"] = {"model": args.model, "dtype": dtype}
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "audit.json").write_text(json.dumps(report, indent=2))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_report(report))
        if args.out:
            print(f"full report in {Path(args.out) / 'audit.json'}")
    return 0


def add_parser(sub) -> None:
    s = sub.add_parser(
        "audit", help="what an adapter changes: off-task drift (KL), on-task effect, refusal probes, its own facts",
        description="Compare the adapted model with its base. Off-task drift: per-token KL(adapted‖base) "
                    "(mean, p95, max) on the base's own greedy continuations of a general prompt set, read "
                    "teacher-forced (no sampling), and the share of those continuations the adapter's greedy "
                    "decoding would change. Behaviour probes (instruct models): the refusal rate on requests "
                    "a model should decline, before → after. With --task: greedy accuracy before → after with "
                    "95% intervals (GSM8K: strict | flexible), the length change, and completions that changed "
                    "at their first divergent token. Plus the adapter's facts (parameters, bytes, SHA-256, "
                    "‖values‖, ‖ΔW‖/‖W‖ per layer). docs/audit.md explains the figures and the JSON keys.")
    s.add_argument("adapter", help="adapter .safetensors file")
    s.add_argument("--model", required=True, help="the base the adapter was trained on: " + MODEL_HELP)
    s.add_argument("--task", help="also measure the on-task effect on this task (e.g. gsm8k, arith)")
    s.add_argument("--split", default="test")
    s.add_argument("--limit", type=int, default=100, help="task examples (default 100)")
    s.add_argument("--task-arg", action="append", default=[], metavar="KEY=VALUE", help="task option")
    s.add_argument("--data-dir", help="local task data: DIR/<split>.jsonl or DIR/<task>/<split>.jsonl")
    s.add_argument("--reference", default="general", metavar="SET",
                   help="off-task prompt set: shipped 'general' (48 everyday requests) or a file (.jsonl with "
                        "a 'prompt' field, or one prompt per line)")
    s.add_argument("--probes", default="refusal", metavar="SET",
                   help="behaviour probes: shipped 'refusal' (24 requests to decline), a file, or 'none'; "
                        "skipped for a model without a chat template")
    s.add_argument("--max-new-tokens", type=int, default=32, help="length of the base's reference continuations")
    s.add_argument("--probe-tokens", type=int, default=48, help="tokens generated per probe")
    s.add_argument("--task-tokens", type=int, default=256, help="tokens generated per task example")
    s.add_argument("--batch-size", type=int, default=8)
    s.add_argument("--dtype", default="fp32", choices=BASE_DTYPES,
                   help="the base's dtype (auto: bf16 where this machine has fast bf16; the adapter stays fp32)")
    s.add_argument("--engine", default="auto", choices=[e for e in ENGINES if e != "vllm"], help="decode loop")
    s.add_argument("--json", action="store_true", help="print the whole report as JSON (stable keys)")
    s.add_argument("--out", help="folder to write audit.json into")
    add_threads(s)
    add_no_cache(s)
    s.set_defaults(func=_cmd_audit)
