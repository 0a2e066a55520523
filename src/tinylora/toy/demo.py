"""A demo adapter on a tiny random base model, so the file format can be seen offline in seconds.

The values are drawn from a seed, not trained: this shows the format, not a skill.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .._core import seeding
from ..adapters.config import TinyLoRAConfig
from ..adapters.file import save
from ..adapters.model import attach, get_root
from ..models.synthetic import tiny_model


def write_demo(out: str | Path) -> tuple[Path, Path]:
    out = Path(out)
    model = tiny_model("qwen2", seed=0)
    base_dir = out / "base"
    model.save_pretrained(base_dir)
    from ..toy.tokenizer import char_tokenizer

    tok = char_tokenizer()  # the toy's characters (91 ids < the model's 128): a base that loads and generates
    tok.save_pretrained(base_dir)
    attach(model, TinyLoRAConfig(r=2, u=13, tying="all", seed=0))
    with torch.no_grad():
        get_root(model).v[0].copy_(0.1 * seeding.normal((13,), 2026))
    adapter = save(model, out / "skill.safetensors", dtype="bf16")
    return base_dir, adapter
