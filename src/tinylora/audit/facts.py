"""An adapter's own facts, for the audit report: what it is, how big, and how far it moves each weight."""

from __future__ import annotations

import hashlib
import re
import statistics
from pathlib import Path
from typing import Any

import torch

from ..adapters.model import adapted_modules, get_root, num_trainable
from ..adapters.multi import flat_values


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _layer_of(name: str) -> str:
    """The block a module sits in (``model.layers.3.self_attn.q_proj`` → ``3``), else the name itself."""
    m = re.search(r"\.(?:layers|h|blocks)\.(\d+)\.", f".{name}.")
    return m.group(1) if m else name


@torch.no_grad()
def adapter_facts(model, info=None) -> dict[str, Any]:
    """Method, parameters, bytes, the file's fingerprint (SHA-256 of its bytes and of its payload),
    ‖values‖ and ‖ΔW‖_F / ‖W‖_F per module (max, median, and the largest per layer).

    ``info`` is the :class:`tinylora.adapters.file.AdapterInfo` the values came from (for the file
    facts); without it only what the model holds is reported."""
    root = get_root(model)
    rel: dict[str, float] = {}
    for name, mod in adapted_modules(model).items():
        dW = mod.delta.delta_weight().float()
        W = mod.base_weight_linear().float()
        rel[name] = float(dW.norm() / W.norm().clamp_min(1e-30))
    per_layer: dict[str, float] = {}
    for name, r in rel.items():
        key = _layer_of(name)
        per_layer[key] = max(per_layer.get(key, 0.0), r)
    top = max(rel, key=rel.get) if rel else None
    out: dict[str, Any] = {
        "method": root.config.method,
        "parameters": num_trainable(model),
        "values_norm": float(flat_values(model).double().norm()),
        "modules": len(rel),
        "delta_rel_max": rel[top] if top else 0.0,
        "delta_rel_max_module": top,
        "delta_rel_median": statistics.median(rel.values()) if rel else 0.0,
        "delta_rel_per_layer": per_layer,
    }
    if info is not None:
        out.update({"file": str(info.path), "payload_bytes": info.payload_bytes, "dtype": info.meta["dtype"],
                    "payload_sha256": info.meta["payload_sha256"], "file_sha256": file_sha256(info.path),
                    "base_model": info.meta.get("base_model")})
    return out
