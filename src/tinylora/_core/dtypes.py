"""The one table of dtype names: the words a config, a file or the command line uses for a float type."""

from __future__ import annotations

DTYPE_NAMES = ("fp32", "bf16", "fp16")


def torch_dtype(name: str):
    """``fp32`` → ``torch.float32`` …; anything else is a ValueError naming the known ones."""
    import torch

    table = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if name not in table:
        raise ValueError(f"dtype must be one of {', '.join(DTYPE_NAMES)}, got {name!r}")
    return table[name]
