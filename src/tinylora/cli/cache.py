"""`tinylora cache`: the cache folder: info, clear."""

from __future__ import annotations

import argparse


def _cmd_cache(args: argparse.Namespace) -> int:
    from .._core import cache as factor_cache

    i = factor_cache.clear() if args.action == "clear" else factor_cache.info()
    state = "" if i["enabled"] else " (disabled: TINYLORA_NO_CACHE is set)"
    verb = "removed" if args.action == "clear" else "holds"
    parts = ", ".join(f"{k} {b / 1e6:.1f} MB" for k, b in i["kinds"].items())
    print(f"{i['path']}{state}: {verb} {i['files']} files, {i['bytes'] / 1e6:.1f} MB" + (f" ({parts})" if parts else ""))
    return 0


def add_parser(sub) -> None:
    s = sub.add_parser("cache", help="the SVD factor and GGUF cache: where it is and how big (info), or empty it (clear)",
                       description="Attach stores each adapted weight's top-r SVD factors under a key made of the "
                                   "weight's exact bytes, so attaching to the same base again reads them instead of "
                                   "recomputing them; a GGUF model is dequantised once into a safetensors folder "
                                   "keyed by the file's bytes. Location: $TINYLORA_CACHE_DIR, else $XDG_CACHE_HOME/tinylora, "
                                   "else ~/.cache/tinylora; TINYLORA_NO_CACHE=1 or --no-cache turns it off.")
    s.add_argument("action", choices=["info", "clear"])
    s.set_defaults(func=_cmd_cache)
