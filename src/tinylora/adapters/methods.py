"""The parameterizations, each one registered unit (as PEFT registers a tuner): its config class, how
it builds a module's ΔW, which tensors it trains, how they are stored in the adapter file and read
back, whether rows of one batch may carry different values (per-row adapters, ES, serving) and its
default learning rate. Attach, the file format, multi-adapter batching and the trainers loop over
:data:`METHODS`; a new method is one more :class:`Method` here (with its config and Delta classes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .._core import seeding
from .config import AdapterConfig, FullConfig, LoRAConfig, LoRAXSConfig, TinyLoRAConfig
from .layers import Delta, FullDelta, LoRADelta, LoRAXSDelta, TinyLoRADelta
from .svd import SVDFactors


@dataclass(frozen=True)
class BuildContext:
    """What a method may use to build module ``index``'s delta."""

    index: int
    shape: tuple[int, int]  # (out, in)
    factors: SVDFactors | None  # the frozen top-r factors, for methods with ``svd``
    shared: nn.ParameterList  # the model-level trained vectors (TinyLoRA's v), empty otherwise
    groups: list[int] | None  # module → tying group, for methods with ``tied``
    generator: torch.Generator  # seeded init for methods with random init (LoRA's A)
    weight: torch.Tensor  # the base weight W (out, in), frozen


@dataclass(frozen=True)
class Method:
    name: str
    config: type[AdapterConfig]
    build: Callable[[AdapterConfig, BuildContext], Delta]
    payload: Callable[[nn.ParameterList, dict[str, nn.Module]], dict[str, torch.Tensor]]
    assign: Callable[[nn.ParameterList, dict[str, nn.Module], dict[str, torch.Tensor]], None]
    default_lr: float  # what works on the toy world (BENCHMARKS.md): few numbers need a larger step
    svd: bool = False  # needs the frozen top-r SVD of each weight
    tied: bool = False  # trains model-level vectors shared by groups of modules (not per-module tensors)
    per_row: bool = False  # batch rows may carry different values (tinylora.adapters.multi)
    # ΔW as an exact LoRA (A: r × in, B: out × r) and its lora_alpha (ΔW = lora_alpha / r · B A), for
    # peft-lora / vLLM; None: the update is not low-rank
    lora_factors: Callable[[Delta], tuple[torch.Tensor, torch.Tensor]] | None = None
    lora_alpha: Callable[[AdapterConfig], float] = lambda c: c.r

    def trainable(self, shared: nn.ParameterList, mods: dict[str, nn.Module]) -> list[nn.Parameter]:
        """The trained tensors, each once, in the order the file stores them."""
        if self.tied:
            return list(shared)
        return [p for m in mods.values() for p in m.delta.parameters()]


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Make ``method`` known: attach, the adapter file, configs (``method: <name>``) and export find it.
    A new parameterization is one module: its config class, its Delta, and this call."""
    from .config import CONFIG_CLASSES

    if method.config.method != method.name:
        raise ValueError(f"method {method.name!r} has a config class for {method.config.method!r}")
    METHODS[method.name] = method
    CONFIG_CLASSES[method.name] = method.config
    return method


def get(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown adapter method {name!r}; known: {', '.join(METHODS)}")
    return METHODS[name]


def of(config: AdapterConfig) -> Method:
    return get(config.method)


def _stacked(key: str, attr: str):
    def payload(shared, mods):
        return {key: torch.stack([getattr(m.delta, attr).float() for m in mods.values()]).cpu()}

    def assign(shared, mods, tensors):
        for i, m in enumerate(mods.values()):
            getattr(m.delta, attr).copy_(tensors[key][i])

    return payload, assign


def _per_module(*pairs: tuple[str, str]):
    """File keys ``<prefix>.<module name>`` for each (prefix, delta attribute)."""
    def payload(shared, mods):
        return {f"{prefix}.{name}": getattr(m.delta, attr).float().cpu()
                for name, m in mods.items() for prefix, attr in pairs}

    def assign(shared, mods, tensors):
        for name, m in mods.items():
            for prefix, attr in pairs:
                getattr(m.delta, attr).copy_(tensors[f"{prefix}.{name}"])

    return payload, assign


def _tinylora_payload(shared, mods):
    return {"v": torch.stack([v.float() for v in shared]).cpu()}


def _tinylora_assign(shared, mods, tensors):
    for i, v in enumerate(shared):
        v.copy_(tensors["v"][i])


def _tinylora_build(c: TinyLoRAConfig, ctx: BuildContext) -> Delta:
    P = seeding.normal((c.u, c.r, c.r), c.seed, ctx.index)  # regenerated from the seed, never stored
    f = ctx.factors
    return TinyLoRADelta(f.U, f.S, f.Vh, P, c.alpha, ctx.shared, ctx.groups[ctx.index])


def _svd_lora(d) -> tuple[torch.Tensor, torch.Tensor]:
    """U Σ R Vᵀ exactly as a rank-r LoRA: A = Vᵀ, B = U Σ R, lora_alpha = r (scaling 1)."""
    return d.Vh, (d.U * d.S) @ d.R().float()


register(Method("tinylora", TinyLoRAConfig, _tinylora_build, _tinylora_payload, _tinylora_assign, default_lr=1e-2,
                svd=True, tied=True, per_row=True, lora_factors=_svd_lora))
register(Method("lora_xs", LoRAXSConfig, lambda c, ctx: LoRAXSDelta(ctx.factors.U, ctx.factors.S, ctx.factors.Vh),
                *_stacked("R", "weight"), default_lr=1e-3, svd=True, per_row=True, lora_factors=_svd_lora))
register(Method("lora", LoRAConfig, lambda c, ctx: LoRADelta(*ctx.shape, c.r, c.alpha, ctx.generator),
                *_per_module(("lora_A", "A"), ("lora_B", "B")), default_lr=1e-4, lora_factors=lambda d: (d.A, d.B),
                lora_alpha=lambda c: c.alpha))
register(Method("full", FullConfig, lambda c, ctx: FullDelta(*ctx.shape), *_per_module(("delta", "delta")),
                default_lr=1e-5))
