"""Load base models by Hugging Face id or local path, with an explicit dtype and device."""

from __future__ import annotations

import os
from pathlib import Path

from .._core.dtypes import torch_dtype


def shipped_toy_path() -> Path:
    """The toy backbone shipped inside the package (regenerate with ``tinylora toy pretrain``)."""
    path = Path(__file__).resolve().parents[1] / "toy" / "backbone"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"the toy backbone is missing from {path}; run `tinylora toy pretrain --out {path}`")
    return path


def resolve(name_or_path: str) -> tuple[str, dict]:
    """Short names (``toy``: the shipped backbone; the real models of :mod:`tinylora.models.catalog`,
    e.g. ``qwen2.5-coder-0.5b-instruct``) and GGUF files (``path/model.gguf``) to a folder and loading kwargs."""
    from . import catalog as model_catalog

    if name_or_path == "toy":
        return str(shipped_toy_path()), {}
    if name_or_path in model_catalog.CATALOG:
        path = model_catalog.gguf_path(name_or_path)
        return str(path.parent), {"gguf_file": path.name}
    if name_or_path.endswith(".gguf"):
        if not os.path.isfile(name_or_path):
            raise FileNotFoundError(f"no GGUF file at {name_or_path!r}")
        folder, name = os.path.split(os.path.abspath(name_or_path))
        return folder, {"gguf_file": name}
    return name_or_path, {}


def _source(name_or_path: str) -> tuple[str, dict]:
    """:func:`resolve`, with a GGUF file replaced by its dequantised copy in the cache (see gguf_cache)."""
    path, kw = resolve(name_or_path)
    if kw.get("gguf_file"):
        from .._core import cache as factor_cache
        from . import gguf as gguf_cache

        if factor_cache.enabled():
            cached = gguf_cache.hf_folder(path, kw["gguf_file"])
            if cached:
                return cached, {}
    return path, kw


def load_tokenizer(name_or_path: str):
    from transformers import AutoTokenizer

    path, kw = _source(name_or_path)
    try:
        tok = AutoTokenizer.from_pretrained(path, **kw)
    except OSError as e:
        raise ValueError(f"cannot load a tokenizer from {name_or_path!r}: {e}") from e
    # transformers builds an empty tokenizer (its special tokens only) for a folder that has none, without a word
    if len(tok) <= len(set(tok.all_special_tokens)) or not tok("a 1", add_special_tokens=False)["input_ids"]:
        raise ValueError(f"{name_or_path!r} has no tokenizer (no tokenizer files beside the weights); save one "
                         "there (tokenizer.save_pretrained) or load the model from a folder that has one")
    return tok


def load_model(name_or_path: str, dtype: str = "fp32", device: str = "cpu"):
    """``AutoModelForCausalLM.from_pretrained`` in eval mode; a local folder never touches the hub."""
    from transformers import AutoModelForCausalLM

    torch_dtype(dtype)  # an unknown name: said before the load
    path, kw = _source(name_or_path)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype(dtype), **kw)
    except OSError as e:
        raise ValueError(f"cannot load model {name_or_path!r}: {' '.join(str(e).split())} — give a local folder "
                         "with config.json and weights, a .gguf file or a name of `tinylora models list` "
                         "(the hub is not reachable offline)") from e
    contiguous_head_input(model)
    return model.to(device).eval()


def contiguous_head_input(model) -> None:
    """Give the output head a contiguous input. ``logits_to_keep`` slices the last positions out of the
    hidden states (a strided view), and torch 2.13's CPU bf16 ``linear`` on a strided 3-D input is slow and
    huge: measured on Qwen2.5-Coder-0.5B's head (151,936 × 896), 64 rows, 61 s and 17 GB instead of 0.11 s
    (``benchmarks/prefill.py``; BENCHMARKS.md, "vLLM side by side"). The copy costs rows × positions × hidden.
    :func:`load_model` calls it; generation and the loss forwards call it too, for models loaded elsewhere."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None or getattr(head, "_tinylora_contiguous", False):
        return
    head.register_forward_pre_hook(lambda mod, args: (args[0].contiguous(), *args[1:]) if args else None)
    head._tinylora_contiguous = True
