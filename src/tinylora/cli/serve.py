"""`tinylora serve`: the OpenAI-compatible server."""

from __future__ import annotations

import argparse
import os

from .._core.dtypes import BASE_DTYPES
from .options import MODEL_HELP, add_no_cache, add_threads, check_model


def _cmd_serve(args: argparse.Namespace) -> int:
    from pathlib import Path as _P

    if not _P(args.adapters).is_dir():
        raise ValueError(f"--adapters {args.adapters}: no such folder")
    check_model(args.model)
    for name, v in (("--max-batch", args.max_batch), ("--max-queue", args.max_queue), ("--port", args.port)):
        if v < (0 if name == "--max-queue" else 1):
            raise ValueError(f"{name} must be positive, got {v}")
    if not (args.timeout > 0 and args.timeout != float("inf")):  # nan fails the first test too
        raise ValueError(f"--timeout must be a positive number of seconds, got {args.timeout}")
    if args.max_kl is not None and not (args.max_kl >= 0 and args.max_kl != float("inf")):
        raise ValueError(f"--max-kl must be a finite number >= 0 (nats per token), got {args.max_kl}")
    from .._core.distributed import resolve_device
    from .._core.threads import set_threads
    from ..serve.http import serve

    args.device = str(resolve_device(args.device))  # cpu, cuda, cuda:N, auto: checked before the load
    from .._core.dtypes import resolve_dtype

    requested = args.dtype
    args.dtype, why = resolve_dtype(args.dtype, args.device)
    if requested == "auto":
        print(f"tinylora serve: dtype auto → {args.dtype} ({why})", flush=True)
    set_threads(args.threads)
    serve(args.model, args.adapters, host=args.host, port=args.port,
          api_key=args.api_key or os.environ.get("TINYLORA_API_KEY"), max_batch=args.max_batch,
          max_queue=args.max_queue, request_timeout_s=args.timeout, dtype=args.dtype, device=args.device,
          log_prompts=args.log_prompts, max_kl=args.max_kl, audit_reference=args.audit_reference)
    return 0


def add_parser(sub) -> None:
    s = sub.add_parser(
        "serve", help="serve one base and every adapter in a folder, OpenAI-compatible, each request its own skill",
        description="An OpenAI-compatible server (GET /v1/models, POST /v1/completions, /v1/chat/completions, "
                    "streaming or not) for one base model and every *.safetensors adapter in --adapters: a request "
                    "names its skill as model=<file stem> (the base: the model's name). Rows of one running batch "
                    "carry different adapters (continuous batching; the base matmuls shared). Files added to the "
                    "folder are picked up without a restart; a file that does not fit the base is refused with a "
                    "logged reason. Binds to 127.0.0.1 unless told otherwise.")
    s.add_argument("--model", required=True, help="the base: " + MODEL_HELP)
    s.add_argument("--adapters", required=True, metavar="DIR", help="folder of adapter files (their stems are the names)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--api-key", help="require 'Authorization: Bearer KEY' (default: TINYLORA_API_KEY, else none)")
    s.add_argument("--max-batch", type=int, default=64, help="rows decoded together")
    s.add_argument("--max-queue", type=int, default=256, help="requests waiting beyond the batch; more get HTTP 429")
    s.add_argument("--timeout", type=float, default=600.0, help="per-request limit in seconds (HTTP 504 past it)")
    s.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (CUDA when present)")
    s.add_argument("--log-prompts", action="store_true",
                   help="put each request's prompt text in its log line (off: ids, adapter, tokens, latency only)")
    s.add_argument("--dtype", default="fp32", choices=BASE_DTYPES,
                   help="the base's dtype (auto: bf16 where this machine has fast bf16, else fp32; adapters stay fp32)")
    s.add_argument("--max-kl", type=float, metavar="NATS",
                   help="audit each adapter's off-task drift when it loads (mean per-token KL(adapted‖base) on the "
                        "base's own continuations of --audit-reference, as `tinylora audit` reports it) and refuse "
                        "those above NATS with a logged reason; /v1/models lists each servable adapter's figures. "
                        "Cached by the file's SHA-256. Each new file's check holds the server while it runs "
                        "(seconds on the toy; see BENCHMARKS.md for a 0.5B model)")
    s.add_argument("--audit-reference", default="general", metavar="SET",
                   help="the drift reference for --max-kl: a shipped prompt set (general) or a file "
                        "(.jsonl with a 'prompt' field, or one prompt per line)")
    add_no_cache(s)
    add_threads(s)
    s.set_defaults(func=_cmd_serve)
