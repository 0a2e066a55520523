"""A dequantised copy of a GGUF model, cached as a plain Hugging Face folder (safetensors).

Loading a GGUF file through ``from_pretrained(..., gguf_file=...)`` parses and dequantises every
tensor, every time (SmolLM2-135M-Instruct: 20–65 s here); reading the same weights back from a
safetensors folder takes under a second. The first load of a GGUF file writes its dequantised
weights (fp32), config and tokenizer under the cache folder (``tinylora._core.cache.cache_dir()``
``/gguf/<key>``); later loads read that folder and get bit-identical weights and logits.

The key is an xxh3-128 hash of the GGUF file's bytes together with the transformers and gguf
versions (the code that dequantises), so a different file or a different dequantiser misses. A hit
is never trusted blindly: ``meta.json`` holds an xxh3-128 hash of every file written, and a folder
whose files no longer hash to it (truncated, edited, half-copied) is reported, removed and rebuilt.
``TINYLORA_NO_CACHE=1`` / ``--no-cache`` load the GGUF file directly.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
from pathlib import Path

from .._core import cache as factor_cache

log = logging.getLogger(__name__)

VERSION = 1  # bump when the folder layout changes: old entries then miss
_CHUNK = 16 << 20


def _hash_file(path: Path, prefix: bytes = b"") -> str:
    import xxhash

    h = xxhash.xxh3_128(prefix)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def gguf_key(gguf_path: str | os.PathLike) -> str:
    """Hash of the GGUF file's bytes and of the versions of the code that dequantises it."""
    import gguf
    import transformers

    prefix = f"v{VERSION}|transformers {transformers.__version__}|gguf {getattr(gguf, '__version__', '?')}|"
    return _hash_file(Path(gguf_path), prefix.encode())


def _verified(folder: Path) -> bool:
    """True when every file listed in meta.json still hashes to what was written."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
        bad = [n for n, h in meta["files"].items() if _hash_file(folder / n) != h]
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warning("gguf cache: ignoring unreadable %s (%s); rebuilding it", folder, e)
        return False
    if bad:
        log.warning("gguf cache: %s fails its check (%s changed since it was written); rebuilding it",
                    folder, ", ".join(sorted(bad)))
        return False
    return True


def _build(folder: str, gguf_file: str, out: Path) -> None:
    """Dequantise once (fp32) and write model.safetensors, config and tokenizer into ``out``."""
    import torch
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32)
    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):  # the copy is plain fp32: loading it must not ask for gguf
        del config.quantization_config
    config.save_pretrained(out)
    save_model(model, str(out / "model.safetensors"))  # tied weights are written once, re-tied on load
    AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file).save_pretrained(out)
    files = {p.name: _hash_file(p) for p in sorted(out.iterdir()) if p.is_file()}
    (out / "meta.json").write_text(json.dumps({"source": str(Path(folder) / gguf_file), "files": files}, indent=1))


def hf_folder(folder: str, gguf_file: str) -> str | None:
    """The cached Hugging Face folder of ``folder/gguf_file``, built on the first call (None: cannot write)."""
    key = gguf_key(Path(folder) / gguf_file)
    final = factor_cache.cache_dir() / "gguf" / key
    if final.exists():
        if _verified(final):
            return str(final)
        shutil.rmtree(final, ignore_errors=True)
    tmp = final.with_name(f"{key}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        log.info("gguf cache: dequantising %s once into %s", gguf_file, final)
        _build(folder, gguf_file, tmp)
        try:
            os.replace(tmp, final)  # atomic: a reader never sees half a folder
        except OSError:
            if not final.exists():  # another process finished first: use its copy
                raise
    except OSError as e:  # a read-only or full disk costs the cache, never the load
        log.warning("gguf cache: cannot write %s (%s); loading the GGUF file directly", final, e)
        return None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(final)
