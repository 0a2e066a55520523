"""Weight tying: which adapted modules share one TinyLoRA vector v.

Pure functions over the list of adapted module names in model order, so the group tables can be
tested on names alone. A module's *type* is the last component of its name (``q_proj``).
"""

from __future__ import annotations

import math


def module_type(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def assign_groups(names: list[str], tying: str, n_tie: int | None = None) -> list[int]:
    """Group index of every module, numbered 0.. in order of first appearance.

    - ``none``: one group per module.
    - ``all``: a single group.
    - ``tiled``: consecutive blocks of ``n_tie`` modules in model order (layer 0's q,k,v,o,gate,
      up,down, then layer 1's …); the last block may be shorter.
    - ``structured``: modules of one type (all q_proj, …) in depth order, cut into blocks of
      ``n_tie``; blocks never mix types. Types are numbered in order of first appearance.
    """
    n = len(names)
    if tying == "none":
        return list(range(n))
    if tying == "all":
        return [0] * n
    if n_tie is None or n_tie < 1:
        raise ValueError(f"tying={tying!r} needs a positive n_tie, got {n_tie!r}")
    if tying == "tiled":
        return [i // n_tie for i in range(n)]
    if tying == "structured":
        by_type: dict[str, list[int]] = {}
        for i, name in enumerate(names):
            by_type.setdefault(module_type(name), []).append(i)
        groups = [0] * n
        next_group = 0
        for members in by_type.values():
            for pos, i in enumerate(members):
                groups[i] = next_group + pos // n_tie
            next_group += math.ceil(len(members) / n_tie)
        return groups
    raise ValueError(f"unknown tying mode {tying!r}")


def num_groups(names: list[str], tying: str, n_tie: int | None = None) -> int:
    return max(assign_groups(names, tying, n_tie), default=-1) + 1


def n_tie_for_budget(names: list[str], tying: str, u: int, budget: int) -> int:
    """Smallest n_tie whose groups × u fits in ``budget`` (most groups the budget allows)."""
    if budget < u:
        raise ValueError(f"budget={budget} is smaller than one vector of u={u} parameters")
    for n_tie in range(1, len(names) + 1):
        if num_groups(names, tying, n_tie) * u <= budget:
            return n_tie
    fewest = num_groups(names, tying, len(names))
    raise ValueError(
        f"budget={budget} cannot be met with tying={tying!r} and u={u}: it needs at least {fewest} groups "
        f"({fewest * u} parameters); raise the budget, lower u, or use tying='all'"
    )
