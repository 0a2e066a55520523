"""Load base models by Hugging Face id or local path, with an explicit dtype and device."""

from __future__ import annotations

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve(name_or_path: str) -> str:
    """Short names of models the package ships (``toy``) to their folders; anything else unchanged."""
    if name_or_path == "toy":
        from .toy.backbone import shipped_path

        return str(shipped_path())
    return name_or_path


def load_tokenizer(name_or_path: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(resolve(name_or_path))
    except OSError as e:
        raise SystemExit(f"cannot load a tokenizer from {name_or_path!r}: {e}") from e


def load_model(name_or_path: str, dtype: str = "fp32", device: str = "cpu"):
    """``AutoModelForCausalLM.from_pretrained`` in eval mode; a local folder never touches the hub."""
    from transformers import AutoModelForCausalLM

    name_or_path = resolve(name_or_path)
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    try:
        model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=DTYPES[dtype])
    except OSError as e:
        raise SystemExit(
            f"cannot load model {name_or_path!r}: {e}\n"
            "Give a local folder with config.json and weights (the hub is not reachable offline)."
        ) from e
    return model.to(device).eval()
