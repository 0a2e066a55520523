"""Interop exports: PEFT TinyLoRA checkpoints, plain rank-r PEFT LoRA adapters, merged HF models.

- ``peft-tinylora``: loadable with ``peft.PeftModel.from_pretrained`` (peft 0.21.x). PEFT computes
  ΔW = B R A with R = Σᵢ vᵢ Pᵢ from saved buffers, so we store A = Vᵀ, B = U Σ and P already scaled
  by α/√u; ``weight_tying = 0`` and every module gets its group's v (PEFT's contiguous tying
  cannot express structured groups). LoRA-XS exports the same way with u = r², P = the basis
  matrices and v = vec(R).
- ``peft-lora``: ΔW = U Σ R Vᵀ has rank r, so B = U Σ R, A = Vᵀ, lora_alpha = r is exact. Every
  LoRA server (vLLM, TGI, PEFT) can load it. Full fine-tuning is not low-rank: use ``merged``.
- ``merged``: ``save_pretrained`` of W + ΔW under the original module names.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from . import methods
from .config import TinyLoRAConfig
from .model import adapted_modules, find_targets, get_root, merged
from .tying import module_type

FORMATS = ("peft-tinylora", "peft-lora", "merged")
PEFT_PREFIX = "base_model.model."


def _peft_target_modules(model: nn.Module, names: list[str]) -> list[str]:
    """Module types (``q_proj``) when they select exactly our modules, else the full names."""
    types = sorted({module_type(n) for n in names})
    try:
        if find_targets(model, types) == names:
            return types
    except ValueError:
        pass
    return list(names)


def _base_config(model: nn.Module, peft_type: str, names: list[str]) -> dict:
    mods = adapted_modules(model)
    return {
        "peft_type": peft_type,
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": getattr(getattr(model, "config", None), "_name_or_path", None) or None,
        "target_modules": _peft_target_modules(model, names),
        "fan_in_fan_out": any(m.fan_in_fan_out for m in mods.values()),
        "bias": "none",
        "inference_mode": True,
    }


def _write_peft(out_dir: Path, config: dict, tensors: dict[str, torch.Tensor]) -> Path:
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    save_file({k: t.detach().float().cpu().clone() for k, t in tensors.items()},  # clone: tied v share memory
              str(out_dir / "adapter_model.safetensors"))
    (out_dir / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    return out_dir


def _export_peft_tinylora(model: nn.Module, out_dir: Path) -> Path:
    root = get_root(model)
    cfg = root.config
    tensors: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for idx, (name, mod) in enumerate(adapted_modules(model).items()):
            d = mod.delta
            r = d.S.shape[0]
            tensors[f"{PEFT_PREFIX}{name}.tinylora_A"] = d.Vh
            tensors[f"{PEFT_PREFIX}{name}.tinylora_B"] = d.U * d.S
            if isinstance(cfg, TinyLoRAConfig):
                tensors[f"{PEFT_PREFIX}{name}.tinylora_P"] = d.P * d.scale
                tensors[f"base_model.tinylora_v.{idx}"] = d.v.detach()
                u = cfg.u
            else:  # LoRA-XS: R = Σ_k R_k E_k over the r² basis matrices
                tensors[f"{PEFT_PREFIX}{name}.tinylora_P"] = torch.eye(r * r).reshape(r * r, r, r)
                tensors[f"base_model.tinylora_v.{idx}"] = d.weight.detach().reshape(-1)
                u = r * r
    config = _base_config(model, "TINYLORA", root.names)
    config.update({"r": cfg.r, "u": u, "weight_tying": 0.0, "projection_seed": getattr(cfg, "seed", 0),
                   "save_projection": True, "init_weights": True, "tinylora_dropout": 0.0})
    return _write_peft(out_dir, config, tensors)


def _export_peft_lora(model: nn.Module, out_dir: Path) -> Path:
    root = get_root(model)
    cfg = root.config
    method = methods.of(cfg)
    tensors: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, mod in adapted_modules(model).items():
            A, B = method.lora_factors(mod.delta)
            tensors[f"{PEFT_PREFIX}{name}.lora_A.weight"] = A
            tensors[f"{PEFT_PREFIX}{name}.lora_B.weight"] = B
    config = _base_config(model, "LORA", root.names)
    config.update({"r": cfg.r, "lora_alpha": method.lora_alpha(cfg), "lora_dropout": 0.0, "use_rslora": False,
                   "use_dora": False, "init_lora_weights": True})
    return _write_peft(out_dir, config, tensors)


def _export_merged(model: nn.Module, out_dir: Path) -> Path:
    with merged(model):
        state = {}
        for key, t in model.state_dict().items():
            if key.startswith("tinylora.") or ".delta." in key:
                continue
            state[key.replace(".base_layer.", ".")] = t
        model.save_pretrained(str(out_dir), state_dict=state)
    return out_dir


def export(model: nn.Module, out_dir: str | os.PathLike, format: str = "peft-lora", tokenizer=None) -> Path:
    """Write the adapted model's update in another tool's format (see module docstring).

    Give ``tokenizer`` to save it beside the export, so ``AutoTokenizer.from_pretrained(out_dir)``
    works on the folder alone (a merged export is then a complete model).
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    cfg = get_root(model).config
    out = Path(out_dir)
    if format == "merged":
        path = _export_merged(model, out)
    elif format == "peft-tinylora":
        if not methods.of(cfg).svd:  # PEFT's TinyLoRA stores U Σ and Vᵀ: the frozen-SVD methods only
            names = " or ".join(m.name for m in methods.METHODS.values() if m.svd)
            raise ValueError(f"peft-tinylora export needs a {names} adapter, not {cfg.method!r}")
        path = _export_peft_tinylora(model, out)
    else:
        if methods.of(cfg).lora_factors is None:
            raise ValueError(f"a {cfg.method!r} update is not low-rank; export it with format='merged'")
        path = _export_peft_lora(model, out)
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
    return path
