"""What several commands share: option groups, the model check before slow work, torchrun launching."""

from __future__ import annotations

import argparse
import json
import os
import sys

# from .options import MODEL_HELP, add_no_cache, add_threads, check_model, launch, parse_kv, strip_nproc


def check_model(name: str | None) -> None:
    """A catalogue name that is not installed: one line now, before any slow work."""
    from ..models import catalog as model_catalog

    if name in model_catalog.CATALOG and not model_catalog.installed(name):
        model_catalog.gguf_path(name)  # raises ModelNotInstalled, naming the install command


def parse_kv(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--task-arg expects key=value, got {pair!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def launch(nproc: int, argv: list[str]) -> int:
    """``tinylora train --nproc N …`` = ``torchrun --standalone --nproc-per-node N -m tinylora train …``."""
    import subprocess

    from .._core.distributed import launched

    if nproc < 1:
        raise ValueError(f"--nproc must be >= 1, got {nproc}")
    if launched():
        raise ValueError("--nproc starts torchrun itself; under torchrun leave it out")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "tinylora", *argv]
    from .._core.threads import threads_per_rank

    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(threads_per_rank(nproc)))  # the cores shared out (torchrun: 1 each)
    print(f"launching: {' '.join(cmd[2:])} ({env['OMP_NUM_THREADS']} threads per rank)", flush=True)
    proc = subprocess.Popen(cmd, env=env)
    interrupted = False
    while True:
        try:
            rc = proc.wait()
            break
        except KeyboardInterrupt:  # the ranks got the same Ctrl-C: let them checkpoint together and exit
            interrupted = True
    if interrupted:
        print("tinylora: interrupted; the ranks saved a checkpoint (see above) — continue with --resume RUN_DIR",
              file=sys.stderr)
        return 130
    if rc != 0:
        print(f"tinylora: the {nproc}-process job failed (torchrun exit code {rc}); the first failing rank and its "
              "error are reported above", file=sys.stderr)
    return rc


def strip_nproc(argv: list[str]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


def add_threads(s: argparse.ArgumentParser) -> None:
    s.add_argument("--threads", type=int, metavar="N", help="torch threads for this process (default: torch's, one "
                   "per core; with --nproc, the cores divided by the ranks). Idle threads sleep rather than spin "
                   "(OMP_WAIT_POLICY=PASSIVE unless you set a policy), which keeps other busy processes from "
                   "multiplying run times (BENCHMARKS.md, Contention)")


MODEL_HELP = ("Hugging Face id, local folder, a .gguf file (dequantised once, then read from the cache), "
              "'toy' (the shipped backbone) or a name of `tinylora models list` (qwen2.5-coder-0.5b-instruct, "
              "qwen2.5-coder-1.5b-instruct, smollm2-135m; installed with `tinylora models install NAME`)")


def add_no_cache(s: argparse.ArgumentParser) -> None:
    s.add_argument("--no-cache", action="store_true", help="compute the SVD factors (and a GGUF model's "
                   "dequantised weights) afresh instead of reading the cache (same as TINYLORA_NO_CACHE=1; see "
                   "tinylora cache info)")
