"""The trainer family: one module per algorithm over one shared loop (:mod:`.base`), and a registry.

    grpo   policy gradient with verifiable rewards (:mod:`.grpo`)
    sft    supervised fine-tuning on reference or own correct samples (:mod:`.sft`)
    es     evolution strategies, gradient-free (:mod:`.es`)

An algorithm module defines a :class:`~.base.Trainer` subclass with ``algo = "<name>"`` and decorates
it with :func:`register`; :func:`make_trainer` imports ``tinylora.trainers.<algo>`` on first use,
so the registry never imports its members back and a new algorithm is one new file.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .base import Trainer
    from .config import TrainConfig

from .config import ALGOS

_REGISTRY: dict[str, type] = {}


def register(cls: type) -> type:
    """Class decorator: make ``cls`` the trainer of ``cls.algo``."""
    if not cls.algo:
        raise ValueError(f"{cls.__name__} has no algo name")
    _REGISTRY[cls.algo] = cls
    return cls


def get(algo: str) -> type:
    """The trainer class of ``algo`` (importing its module on first use)."""
    if algo not in _REGISTRY:
        if algo not in ALGOS:
            raise ValueError(f"unknown algo {algo!r}; known: {', '.join(ALGOS)}")
        importlib.import_module(f"{__name__}.{algo}")
    return _REGISTRY[algo]


def make_trainer(cfg: TrainConfig, **kw) -> Trainer:
    """The trainer for ``cfg.algo``."""
    return get(cfg.algo)(cfg, **kw)
