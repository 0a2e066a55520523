"""Load base models by Hugging Face id or local path, with an explicit dtype and device."""

from __future__ import annotations

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def load_model(name_or_path: str, dtype: str = "fp32", device: str = "cpu"):
    """``AutoModelForCausalLM.from_pretrained`` in eval mode; a local folder never touches the hub."""
    from transformers import AutoModelForCausalLM

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
