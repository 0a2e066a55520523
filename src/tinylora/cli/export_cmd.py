"""`tinylora export`: an adapter as PEFT TinyLoRA / PEFT LoRA / llama.cpp LoRA GGUF / a merged model."""

from __future__ import annotations

import argparse
from pathlib import Path

from .._core.dtypes import DTYPE_NAMES
from .options import MODEL_HELP, add_no_cache, check_model


def _cmd_export(args: argparse.Namespace) -> int:
    from ..adapters.export import export
    from ..adapters.file import load, read
    from ..models.loading import load_model, load_tokenizer

    read(args.adapter)  # before the slow load
    check_model(args.model)
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"--out {out} exists and is not an empty folder; export writes a whole folder, so give a "
                         "new or empty one (nothing of yours is written over)")
    from .._core.distributed import resolve_device

    device = str(resolve_device(args.device))  # before the load
    tokenizer = load_tokenizer(args.model)  # a base without one is named now; export copies it on
    model = load_model(args.model, dtype=args.dtype, device=device)
    load(model, args.adapter)
    out = export(model, args.out, format=args.format, tokenizer=tokenizer)
    print(f"wrote {args.format} export to {out}")
    return 0


def add_parser(sub) -> None:
    s = sub.add_parser("export", help="export an adapter to PEFT TinyLoRA / PEFT LoRA / a merged HF model")
    s.add_argument("--model", required=True, help="base model: " + MODEL_HELP)
    s.add_argument("--adapter", required=True, help="adapter .safetensors file trained on that base")
    s.add_argument("--format", required=True, choices=["peft-tinylora", "peft-lora", "gguf-lora", "merged"],
                   help="peft-tinylora: peft.PeftModel loads it; peft-lora: exact rank-r LoRA for vLLM and "
                        "LoRA servers; gguf-lora: the same LoRA as llama.cpp's adapter.gguf (llama-cli "
                        "--lora); merged: save_pretrained of W + ΔW")
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--dtype", default="fp32", choices=DTYPE_NAMES, help="dtype to load the base in")
    s.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto: where the base is loaded to merge")
    add_no_cache(s)
    s.set_defaults(func=_cmd_export)
