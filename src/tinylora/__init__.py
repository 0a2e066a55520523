"""tinylora: teach a language model a skill with an update of a few bytes.

    import tinylora
    cfg = tinylora.TinyLoRAConfig(r=2, u=13, tying="all", seed=0)
    tinylora.attach(model, cfg)
    tinylora.num_trainable(model); tinylora.update_bytes(model, dtype="bf16")
    with tinylora.merged(model): model.generate(...)
    tinylora.save(model, "skill.safetensors", dtype="bf16"); tinylora.load(model, "skill.safetensors")
"""

__version__ = "0.1.0"

from .adapter_file import AdapterError, AdapterInfo, load, read, save
from .config import (
    AdapterConfig,
    FullConfig,
    LoRAConfig,
    LoRAXSConfig,
    TinyLoRAConfig,
    config_from_dict,
    config_from_yaml,
)
from .export import export
from .model import (
    adapted_modules,
    attach,
    delta_weights,
    detach,
    disabled,
    merge,
    merged,
    num_trainable,
    trainable_parameters,
    unmerge,
    update_bytes,
)

__all__ = [
    "AdapterConfig", "AdapterError", "AdapterInfo", "FullConfig", "LoRAConfig", "LoRAXSConfig",
    "TinyLoRAConfig", "adapted_modules", "attach", "config_from_dict", "config_from_yaml",
    "delta_weights", "detach", "disabled", "export", "load", "merge", "merged", "num_trainable",
    "read", "save", "trainable_parameters", "unmerge", "update_bytes",
]
