"""`tinylora inspect`: print an adapter file's facts."""

from __future__ import annotations

import argparse
import json


def _cmd_inspect(args: argparse.Namespace) -> int:
    from ..adapters.file import read

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


def add_parser(sub) -> None:
    s = sub.add_parser("inspect", help="print an adapter file's method, config, size, values and base fingerprint")
    s.add_argument("file", help="adapter .safetensors file")
    s.add_argument("--json", action="store_true", help="print everything as JSON")
    s.add_argument("--all-values", action="store_true", help="print the values even for large adapters")
    s.set_defaults(func=_cmd_inspect)
