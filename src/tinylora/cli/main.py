"""The ``tinylora`` command: a thin argparse layer over the Python API, one module per command."""

from __future__ import annotations

import argparse
import os
import sys
import warnings

from .. import __version__
from . import (
    audit_cmd,
    cache,
    demo,
    eval_cmd,
    export_cmd,
    inspect_cmd,
    models,
    serve,
    sweep,
    toy,
    train,
)
from .train import train_config_from_args  # noqa: F401  (part of the API: the run's config from argv)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tinylora",
        description="Teach a language model a skill with an update of a few bytes (TinyLoRA and friends).",
    )
    p.add_argument("--version", action="version", version=f"tinylora {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    inspect_cmd.add_parser(sub)
    export_cmd.add_parser(sub)
    eval_cmd.add_parser(sub)
    audit_cmd.add_parser(sub)
    train.add_parser(sub)
    sweep.add_parser(sub)
    serve.add_parser(sub)
    cache.add_parser(sub)
    toy.add_parser(sub)
    models.add_parser(sub)
    demo.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)  # --help and usage errors: before torch is imported
    args.argv = argv
    from .._core.threads import apply_wait_policy

    apply_wait_policy()  # before torch (and its OpenMP runtime) loads: idle threads sleep, not spin
    from .._core.memory import keep_freed_memory

    keep_freed_memory()  # large temporaries reuse freed pages, not fresh ones (TINYLORA_ALLOCATOR=system: off)
    if getattr(args, "no_cache", False):
        os.environ["TINYLORA_NO_CACHE"] = "1"  # this process and any ranks it starts
    from .._core.errors import TinyLoRAError

    ok = False
    try:
        rc = args.func(args)
        ok = True
        return rc
    except (TinyLoRAError, ValueError, FileNotFoundError) as e:  # ours, and bad values from anywhere
        print(f"tinylora {args.command}: error: {e}", file=sys.stderr)  # one line, no traceback
        return 2
    except RuntimeError as e:  # a peer died or a collective timed out (DistFailure, torch's DistError)
        if type(e).__name__ not in ("DistFailure", "DistError", "DistBackendError", "DistNetworkError"):
            raise
        print(f"tinylora {args.command}: error: {e}", file=sys.stderr)
        return 3
    finally:
        if "torch.distributed" in sys.modules:  # leave the process group cleanly (torch warns otherwise)
            from .._core.distributed import shutdown

            shutdown(sync=ok)


_default_formatwarning = warnings.formatwarning


_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep  # the package, not cli/


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    """Our own warnings are messages to the user, one line each; other libraries' keep their source line."""
    if os.path.abspath(str(filename)).startswith(_PACKAGE_DIR):
        return f"tinylora: warning: {message}\n"
    return _default_formatwarning(message, category, filename, lineno, line)


def entry() -> None:
    """The console script. A rank started by torchrun leaves with ``os._exit`` once its output is
    flushed and the process group is gone, skipping the interpreter's teardown. Without it a rank
    aborted now and then ("terminate called without an active exception") after its work was done;
    its core dump (BENCHMARKS.md, "The distributed tests under load") shows why: a gloo worker thread
    (``ProcessGroupGloo::runLoop``) destroys the last barrier's work object, whose tensors' Python
    objects need the GIL; a thread that asks for the GIL during ``Py_FinalizeEx`` is ended with
    ``pthread_exit``, and that forced unwind through a noexcept destructor calls ``std::terminate``."""
    warnings.formatwarning = _one_line_warning
    rc = main()
    if "torch.distributed" in sys.modules and os.environ.get("WORLD_SIZE") and os.environ.get("RANK"):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc or 0)
    sys.exit(rc)


if __name__ == "__main__":
    entry()
