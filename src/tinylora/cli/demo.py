"""`tinylora demo`: a tiny base and adapter, offline."""

from __future__ import annotations

import argparse


def _cmd_demo(args: argparse.Namespace) -> int:
    from ..toy.demo import write_demo

    base, adapter = write_demo(args.out)
    print(f"demo base model: {base}\ndemo adapter:    {adapter}\n"
          f"next: tinylora inspect {adapter}")
    return 0


def add_parser(sub) -> None:
    s = sub.add_parser("demo", help="write a tiny random base model and a 13-parameter adapter for it (offline)")
    s.add_argument("--out", default="demo", help="output folder (default: ./demo)")
    s.set_defaults(func=_cmd_demo)
