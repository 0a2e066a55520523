"""Interop exports: PEFT TinyLoRA checkpoints, plain rank-r PEFT LoRA adapters, merged HF models.

- ``peft-tinylora``: loadable with ``peft.PeftModel.from_pretrained`` (peft 0.21.x). PEFT computes
  ΔW = B R A with R = Σᵢ vᵢ Pᵢ from saved buffers, so we store A = Vᵀ, B = U Σ and P already scaled
  by α/√u; ``weight_tying = 0`` and every module gets its group's v (PEFT's contiguous tying
  cannot express structured groups). LoRA-XS exports the same way with u = r², P = the basis
  matrices and v = vec(R).
- ``peft-lora``: ΔW = U Σ R Vᵀ has rank r, so B = U Σ R, A = Vᵀ, lora_alpha = r is exact. Every
  LoRA server (vLLM, TGI, PEFT) can load it. Full fine-tuning is not low-rank: use ``merged``.
- ``gguf-lora``: the ``peft-lora`` factors as a llama.cpp LoRA adapter (``adapter.gguf``): tensors
  ``<gguf name>.lora_a`` (r × in) and ``.lora_b`` (out × r), ``general.type = adapter``,
  ``adapter.type = lora``, ``adapter.lora.alpha``, as llama.cpp's ``convert_lora_to_gguf.py`` writes
  them (names from gguf-py's tensor map; Llama's q/k rows permuted as its converter permutes the
  base weights). ``llama-cli -m base.gguf --lora adapter.gguf`` runs the skill.
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

FORMATS = ("peft-tinylora", "peft-lora", "gguf-lora", "merged")
GGUF_ARCHS = {"qwen2": "QWEN2", "llama": "LLAMA"}  # model_type → gguf.MODEL_ARCH member (tested ones)
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


def peft_lora_tensors(model: nn.Module, table: dict[str, torch.Tensor] | None = None, entry: int | None = None
                      ) -> tuple[dict[str, torch.Tensor], dict]:
    """The ``peft-lora`` tensors and config of the model's adapter, or of entry ``entry`` of a per-row
    ``table`` (:func:`tinylora.adapters.multi.adapter_table`, whose entries are Σ R_k: B_k = U Σ R_k)."""
    root = get_root(model)
    cfg = root.config
    method = methods.of(cfg)
    tensors: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, mod in adapted_modules(model).items():
            if table is None:
                A, B = method.lora_factors(mod.delta)
            else:
                A, B = mod.delta.Vh, mod.delta.U @ table[name][entry].to(mod.delta.U.dtype)
            tensors[f"{PEFT_PREFIX}{name}.lora_A.weight"] = A
            tensors[f"{PEFT_PREFIX}{name}.lora_B.weight"] = B
    config = _base_config(model, "LORA", root.names)
    config.update({"r": cfg.r, "lora_alpha": method.lora_alpha(cfg), "lora_dropout": 0.0, "use_rslora": False,
                   "use_dora": False, "init_lora_weights": True})
    return tensors, config


def _export_peft_lora(model: nn.Module, out_dir: Path) -> Path:
    tensors, config = peft_lora_tensors(model)
    return _write_peft(out_dir, config, tensors)


def _llama_permute(rows: torch.Tensor, n_head: int) -> torch.Tensor:
    """llama.cpp's converter reorders Llama's q/k rows for its RoPE layout; ΔW's B rows must follow."""
    return rows.reshape(n_head, 2, rows.shape[0] // n_head // 2, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)


def _export_gguf_lora(model: nn.Module, out_dir: Path) -> Path:
    import gguf

    root = get_root(model)
    cfg, conf = root.config, model.config
    kind = getattr(conf, "model_type", None)
    if kind not in GGUF_ARCHS:
        raise ValueError(f"gguf-lora export knows architectures {sorted(GGUF_ARCHS)}, not {kind!r}")
    method = methods.of(cfg)
    arch = getattr(gguf.MODEL_ARCH, GGUF_ARCHS[kind])
    names = gguf.get_tensor_name_map(arch, conf.num_hidden_layers)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "adapter.gguf"
    w = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[arch])
    w.add_type(gguf.GGUFType.ADAPTER)
    w.add_string(gguf.Keys.Adapter.TYPE, "lora")
    w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(method.lora_alpha(cfg)))
    with torch.no_grad():
        for name, mod in adapted_modules(model).items():
            if name == "lm_head" and getattr(conf, "tie_word_embeddings", False):
                raise ValueError("gguf-lora: the adapter changes lm_head, which this base ties to its embedding "
                                 "(llama.cpp has one tensor for both); export with format='merged'")
            gname = names.get_name(name + ".weight", try_suffixes=(".weight",))
            if gname is None:
                raise ValueError(f"gguf-lora: no llama.cpp tensor for module {name!r}")
            A, B = (t.detach().float().cpu().contiguous() for t in method.lora_factors(mod.delta))
            if kind == "llama" and name.endswith(("q_proj", "k_proj")):
                heads = conf.num_attention_heads if name.endswith("q_proj") else conf.num_key_value_heads
                B = _llama_permute(B, heads)
            w.add_tensor(gname + ".lora_a", A.numpy())
            w.add_tensor(gname + ".lora_b", B.contiguous().numpy())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out_dir


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
        path = _export_gguf_lora(model, out) if format == "gguf-lora" else _export_peft_lora(model, out)
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
    return path
