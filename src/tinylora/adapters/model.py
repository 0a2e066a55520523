"""Attach a parameterization to a Hugging Face causal LM, and operate on the attached model.

``attach`` replaces every target ``nn.Linear``/``Conv1D`` with an :class:`AdaptedLinear` and
registers an :class:`AdapterRoot` as ``model.tinylora``; the root owns the config, the module
order, the tying groups, the shared TinyLoRA vectors and the base fingerprint. Everything else
here reads that root.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import torch
from torch import nn

from . import fingerprint as fp
from . import methods, tying
from .config import (
    DEFAULT_TARGETS_GPT2,
    DEFAULT_TARGETS_LLAMA,
    AdapterConfig,
)
from .factors import cached_top_r
from .layers import AdaptedLinear
from .methods import BuildContext
from .svd import SVDFactors

log = logging.getLogger(__name__)

ROOT_NAME = "tinylora"
STORAGE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
# A relative gap (σᵢ − σᵢ₊₁)/σ₁ below this makes the factors depend on rounding: warn.
ILL_CONDITIONED_GAP = 1e-3


class AdapterRoot(nn.Module):
    """Model-level adapter state: config, module order, groups, shared v, base fingerprint."""

    def __init__(self, config: AdapterConfig, names: list[str], groups: list[int] | None, u: int | None):
        super().__init__()
        self.config = config
        self.names = names
        self.groups = groups
        self.v = nn.ParameterList(
            [nn.Parameter(torch.zeros(u)) for _ in range(max(groups) + 1)] if groups is not None else []
        )
        self.fingerprint: dict = {}
        self.svd_stats: dict[str, dict] = {}


def _conv1d_cls():
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover - transformers is a dependency
        return ()
    return (Conv1D,)


def default_targets(model: nn.Module) -> list[str]:
    model_type = getattr(getattr(model, "config", None), "model_type", "")
    return list(DEFAULT_TARGETS_GPT2 if model_type == "gpt2" else DEFAULT_TARGETS_LLAMA)


def find_targets(model: nn.Module, target_modules: list[str] | None) -> list[str]:
    """Names (model order) of the linear layers matching ``target_modules``."""
    targets = target_modules or default_targets(model)
    kinds = (nn.Linear, *_conv1d_cls())
    names = []
    for name, module in model.named_modules():
        if not isinstance(module, kinds):
            continue
        if any(name == t or name.endswith("." + t) for t in targets):
            names.append(name)
    if not names:
        linear = [n for n, m in model.named_modules() if isinstance(m, kinds)][:12]
        raise ValueError(
            f"no linear layer matches target_modules={targets}; linear layers in this model include {linear}"
        )
    return names


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def get_root(model: nn.Module) -> AdapterRoot:
    root = getattr(model, ROOT_NAME, None)
    if not isinstance(root, AdapterRoot):
        raise ValueError("this model has no tinylora adapter: call tinylora.attach(model, config) first")
    return root


def is_attached(model: nn.Module) -> bool:
    return isinstance(getattr(model, ROOT_NAME, None), AdapterRoot)


def adapted_modules(model: nn.Module) -> dict[str, AdaptedLinear]:
    root = get_root(model)
    return {name: model.get_submodule(name) for name in root.names}


def _progress(iterable, total: int, desc: str, enabled: bool):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False)


def attach(
    model: nn.Module,
    config: AdapterConfig,
    *,
    svd_method: str = "auto",
    progress: bool | None = None,
    cache: bool | None = None,
) -> nn.Module:
    """Adapt ``model`` in place with ``config``; freezes every base parameter. Returns the model.

    ``svd_method`` ("auto" | "randomized" | "exact") chooses how the SVD-based methods get their
    frozen factors (see :func:`tinylora.adapters.svd.top_r`); ``cache`` reads and writes them in the factor
    cache (:mod:`tinylora.adapters.factors`; None: on unless ``TINYLORA_NO_CACHE=1``).
    """
    if is_attached(model):
        raise ValueError("model already has a tinylora adapter; attach one adapter per model")
    names = find_targets(model, config.target_modules)
    kinds_conv = _conv1d_cls()
    owners: dict[int, list[str]] = {}
    for mod_name, mod in model.named_modules(remove_duplicate=False):
        w = getattr(mod, "weight", None)
        if isinstance(w, torch.Tensor):
            owners.setdefault(id(w), []).append(mod_name)
    for name in names:
        shared = owners.get(id(model.get_submodule(name).weight), [])
        if len(shared) > 1:
            raise ValueError(
                f"{name}'s weight is tied to {[n for n in shared if n != name]}: adapting it would change those "
                "modules too (e.g. the input embeddings when merging). Load the model with "
                "tie_word_embeddings=False or leave it out of target_modules."
            )

    method = methods.of(config)
    groups: list[int] | None = None
    u = None
    if method.tied:
        n_tie = config.n_tie
        if config.budget is not None:
            n_tie = tying.n_tie_for_budget(names, config.tying, config.u, config.budget)
        groups = tying.assign_groups(names, config.tying, n_tie)
        u = config.u
    root = AdapterRoot(config, names, groups, u)
    if method.tied:
        root.n_tie = n_tie  # resolved value when a budget was given

    for p in model.parameters():
        p.requires_grad_(False)

    lora_gen = torch.Generator().manual_seed(getattr(config, "seed", 0))
    modules_fp: dict[str, dict] = {}
    weight_dtype = None
    show = progress if progress is not None else len(names) > 32
    for index, name in enumerate(_progress(names, len(names), "tinylora attach", show)):
        base = model.get_submodule(name)
        fan_in_fan_out = bool(kinds_conv) and isinstance(base, kinds_conv)
        W = base.weight.detach()
        W = W.T if fan_in_fan_out else W  # (out, in)
        weight_dtype = str(W.dtype).removeprefix("torch.")
        out_f, in_f = W.shape
        factors: SVDFactors | None = None
        if method.svd:
            if config.r > min(out_f, in_f):
                raise ValueError(f"r={config.r} exceeds min(shape)={min(out_f, in_f)} of {name} ({out_f}×{in_f})")
            factors = cached_top_r(W, config.r, method=svd_method, use_cache=cache)
            root.svd_stats[name] = {"method": factors.method, "iterations": factors.iterations,
                                    "residual": factors.residual, "gap": factors.gap}
        dev = W.device
        delta = method.build(config, BuildContext(index, (out_f, in_f), factors, root.v, groups, lora_gen, W))
        modules_fp[name] = fp.module_fingerprint(W, factors)
        wrapped = AdaptedLinear(base, delta.to(dev), fan_in_fan_out)
        _set_submodule(model, name, wrapped)

    root.fingerprint = {"weight_dtype": weight_dtype, "modules": modules_fp}
    model.add_module(ROOT_NAME, root.to(next(model.parameters()).device))
    for p in trainable_parameters(model):
        p.requires_grad_(True)
    ill = [n for n, s in root.svd_stats.items() if s["gap"] < ILL_CONDITIONED_GAP]
    if ill:
        log.warning(
            "%d of %d adapted weights have nearly equal top singular values (relative gap < %g), e.g. %s: "
            "their top-%d factors depend on rounding, so an adapter trained here may not transfer exactly "
            "across precisions or devices on those modules.",
            len(ill), len(names), ILL_CONDITIONED_GAP, ill[0], config.r,
        )
    return model


def detach(model: nn.Module) -> nn.Module:
    """Remove the adapter (unmerging first) and restore the original modules."""
    root = get_root(model)
    for name, mod in adapted_modules(model).items():
        mod.unmerge()
        _set_submodule(model, name, mod.base_layer)
    delattr(model, ROOT_NAME)
    del root
    return model


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The adapter's trainable tensors, each once, in a fixed order (the order the file stores)."""
    root = get_root(model)
    return methods.of(root.config).trainable(root.v, adapted_modules(model))


def num_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in trainable_parameters(model))


def update_bytes(model: nn.Module, dtype: str = "fp32") -> int:
    """Exact bytes of the update's payload when stored in ``dtype`` (fp32 | bf16 | fp16)."""
    if dtype not in STORAGE_BYTES:
        raise ValueError(f"dtype must be one of {sorted(STORAGE_BYTES)}, got {dtype!r}")
    return num_trainable(model) * STORAGE_BYTES[dtype]


def delta_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """{module name: dense ΔW (float32, nn.Linear's (out, in) layout)}: the reference math."""
    with torch.no_grad():
        return {name: mod.delta.delta_weight() for name, mod in adapted_modules(model).items()}


def merge(model: nn.Module) -> None:
    for mod in adapted_modules(model).values():
        mod.merge()


def unmerge(model: nn.Module) -> None:
    for mod in adapted_modules(model).values():
        mod.unmerge()


@contextlib.contextmanager
def merged(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the block the model runs on W + ΔW (fast generation); the base is restored exactly after."""
    merge(model)
    try:
        yield model
    finally:
        unmerge(model)


@contextlib.contextmanager
def disabled(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the block the model is the base model (e.g. the reference policy for a KL term)."""
    mods = adapted_modules(model)
    if any(m.merged for m in mods.values()):
        raise RuntimeError("cannot disable a merged adapter; unmerge first")
    for m in mods.values():
        m.disabled = True
    try:
        yield model
    finally:
        for m in mods.values():
            m.disabled = False
