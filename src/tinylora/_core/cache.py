"""The one cache folder of tinylora: SVD factors (``factors/``), dequantised GGUF models (``gguf/``)
and assembled catalogue models (``models/``).

Where: ``$TINYLORA_CACHE_DIR``, else ``$XDG_CACHE_HOME/tinylora``, else ``~/.cache/tinylora``;
``TINYLORA_NO_CACHE=1`` (or ``--no-cache``) turns the caches of computed things off.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    if os.environ.get("TINYLORA_CACHE_DIR"):
        return Path(os.environ["TINYLORA_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tinylora"


def enabled() -> bool:
    return os.environ.get("TINYLORA_NO_CACHE", "").lower() not in ("1", "true", "yes")


def info() -> dict:
    root = cache_dir()
    files = [p for p in root.rglob("*") if p.is_file()] if root.exists() else []
    kinds: dict[str, int] = {}  # bytes per top folder: factors (SVD), gguf (dequantised models)
    for p in files:
        k = p.relative_to(root).parts[0]
        kinds[k] = kinds.get(k, 0) + p.stat().st_size
    return {"path": str(root), "enabled": enabled(), "files": len(files),
            "bytes": sum(kinds.values()), "kinds": dict(sorted(kinds.items()))}


def clear() -> dict:
    import shutil

    before = info()
    shutil.rmtree(cache_dir(), ignore_errors=True)
    return before
