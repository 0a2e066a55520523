"""Tasks: data, prompts, answer checking and rewards, by name.

    task = tinylora.tasks.get("gsm8k", data_dir="../shared/data/gsm8k")
    examples = task.load("test")
    task.score(completion, examples[0].answer)   # 1.0 or 0.0; the reward and the eval both use this
"""

from __future__ import annotations

from .arith import ArithTask
from .base import Example, Task, TaskDataError, read_jsonl
from .gsm8k import GSM8K
from .jsonl import JSONLTask
from .math import AIME24, AMC23, MATH500
from .rewards import TaskReward

_REGISTRY: dict[str, type[Task]] = {}


def register(cls: type[Task]) -> type[Task]:
    """Make a Task class available to ``get`` (and the CLI) under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    _REGISTRY[cls.name] = cls
    return cls


for _cls in (GSM8K, MATH500, AIME24, AMC23, JSONLTask, ArithTask):
    register(_cls)


def names() -> list[str]:
    return sorted(_REGISTRY)


def get(name: str, **kwargs) -> Task:
    if name not in _REGISTRY:
        raise ValueError(f"unknown task {name!r}; known tasks: {sorted(_REGISTRY)}")
    cls = _REGISTRY[name]
    known = _options(cls)
    unknown = sorted(set(kwargs) - known)
    if unknown:  # a misspelled option (mdoe=strict) must not be a traceback, nor be ignored
        raise ValueError(f"unknown option(s) {unknown} for task {name!r}; known: {sorted(known)}")
    return cls(**kwargs)


def _options(cls) -> set[str]:
    """The keyword options a task class takes, through the ``**kw`` it passes up to its bases."""
    import inspect

    out = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        out |= {p.name for p in params if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return out


__all__ = ["AIME24", "AMC23", "Example", "GSM8K", "JSONLTask", "MATH500", "Task", "TaskDataError", "TaskReward", "get", "names",
           "read_jsonl", "register"]
