"""The ``tinylora`` command: a thin argparse layer over the Python API."""

from __future__ import annotations

import argparse
import json
import sys

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
    from .adapter_file import load
    from .export import export
    from .loading import load_model

    model = load_model(args.model, dtype=args.dtype)
    load(model, args.adapter)
    out = export(model, args.out, format=args.format)
    print(f"wrote {args.format} export to {out}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import write_demo

    base, adapter = write_demo(args.out)
    print(f"demo base model: {base}\ndemo adapter:    {adapter}\n"
          f"next: tinylora inspect {adapter}")
    return 0


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
    s.add_argument("--model", required=True, help="base model: Hugging Face id or local folder")
    s.add_argument("--adapter", required=True, help="adapter .safetensors file trained on that base")
    s.add_argument("--format", required=True, choices=["peft-tinylora", "peft-lora", "merged"],
                   help="peft-tinylora: peft.PeftModel loads it; peft-lora: exact rank-r LoRA for vLLM and "
                        "LoRA servers; merged: save_pretrained of W + ΔW")
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"], help="dtype to load the base in")
    s.set_defaults(func=_cmd_export)

    s = sub.add_parser("demo", help="write a tiny random base model and a 13-parameter adapter for it (offline)")
    s.add_argument("--out", default="demo", help="output folder (default: ./demo)")
    s.set_defaults(func=_cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    from .adapter_file import AdapterError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (AdapterError, ValueError, FileNotFoundError) as e:
        print(f"tinylora {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
