"""tinylora: teach a language model a skill with an update of a few bytes.

    import tinylora
    cfg = tinylora.TinyLoRAConfig(r=2, u=13, tying="all", seed=0)
    tinylora.attach(model, cfg)
    tinylora.num_trainable(model); tinylora.update_bytes(model, dtype="bf16")
    with tinylora.merged(model): model.generate(...)
    tinylora.save(model, "skill.safetensors", dtype="bf16"); tinylora.load(model, "skill.safetensors")

Names are imported on first use (PEP 562), so ``tinylora --help`` and argument errors do not wait
for torch and transformers; the layers (``tinylora.adapters``, ``tinylora.tasks``, …) are attributes.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "_core.errors": ("TinyLoRAError",),
    "models.catalog": ("ModelNotInstalled",),
    "adapters.file": ("AdapterError", "AdapterInfo", "load", "read", "save"),
    "adapters.config": ("AdapterConfig", "FullConfig", "LoRAConfig", "LoRAXSConfig", "TinyLoRAConfig",
                        "config_from_dict", "config_from_yaml"),
    "adapters.export": ("export",),
    "adapters.multi": ("adapter_table", "flat_values", "per_row", "set_flat_values"),
    "adapters.model": ("adapted_modules", "attach", "delta_weights", "detach", "disabled", "merge", "merged",
                       "num_trainable", "trainable_parameters", "unmerge", "update_bytes"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
# the layers, outermost last (see tests/test_layers.py): _core ← adapters, models, tasks ← generation ←
# evaluation, serve ← trainers, toy ← cli
_SUBMODULES = ("adapters", "models", "tasks", "generation", "evaluation", "serve", "trainers", "toy", "cli")

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'tinylora' has no attribute {name!r}")
    globals()[name] = value  # once imported, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE) | set(_SUBMODULES))
