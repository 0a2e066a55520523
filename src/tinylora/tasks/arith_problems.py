"""A seeded generator of short multi-step arithmetic word problems, and their solution styles.

Every problem is a pure function of (seed, index). Its split is decided by a hash of its content,
so train and test are disjoint by construction: the same problem text can never land in both.

Solution styles (what follows ``A:``):

- ``step``:    ``Step by step: 12+5=17. 17-3=14. 14*2=28. #### 28`` — the skill.
- ``direct``:  ``#### 28`` — a guess, usually wrong for multi-step problems.
- ``verbose``: GSM8K-like sentences with ``<<12+5=17>>`` calculator notes — never pretrained on;
  the SFT baseline's reference style, unlike the model's own habits as real SFT data is.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import asdict, dataclass, field

NAMES = ("Tom", "Ann", "Ben", "Mia", "Sam", "Eva", "Leo", "Zoe", "Max", "Ivy", "Dan", "Amy", "Joe", "Kim",
         "Liz", "Ray", "Tia", "Ned", "Pam", "Gus")
OBJECTS = ("apples", "books", "coins", "cards", "shells", "stamps", "marbles", "pencils", "stickers", "cookies",
           "balloons", "buttons", "rocks", "candies", "toys", "flowers")
ADD = ("{n} buys {b} more.", "{n} finds {b} more.", "{n} gets {b} more.", "{n} wins {b} more.")
SUB = ("{n} gives away {b}.", "{n} loses {b}.", "{n} sells {b}.", "{n} uses {b}.")
MUL = {2: "{n} doubles them.", 3: "{n} triples them.", 4: "{n} gets 4 times as many."}
FORCED_STEP_PREFIX = "Step by step:"
TEST_FRACTION = 10  # one problem in ten (by content hash) is a test problem


@dataclass
class ArithConfig:
    """Difficulty knobs; recorded with every dataset and model trained on it."""

    min_steps: int = 2
    max_steps: int = 3
    start_range: tuple[int, int] = (5, 40)
    operand_range: tuple[int, int] = (2, 20)
    max_multiplier: int = 3
    max_value: int = 150  # multiplication only when the result stays below this

    def __post_init__(self):
        self.start_range, self.operand_range = tuple(self.start_range), tuple(self.operand_range)
        if not 1 <= self.min_steps <= self.max_steps:
            raise ValueError(f"need 1 <= min_steps <= max_steps, got {self.min_steps}, {self.max_steps}")
        if self.max_multiplier not in (1, 2, 3, 4):
            raise ValueError("max_multiplier must be 1 (no ×), 2, 3 or 4")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Problem:
    name: str
    obj: str
    start: int
    ops: list[tuple[str, int]]  # ("+", 5), ("-", 3), ("*", 2)
    question: str = field(init=False)
    answer: int = field(init=False)

    def __post_init__(self):
        self.question = self._question()
        self.answer = self.values()[-1]

    def values(self) -> list[int]:
        vals = [self.start]
        for op, x in self.ops:
            v = vals[-1]
            vals.append(v + x if op == "+" else v - x if op == "-" else v * x)
        return vals

    def _question(self) -> str:
        rng = random.Random(self.key())  # sentence wording: a function of the content
        parts = [f"{self.name} has {self.start} {self.obj}."]
        for op, x in self.ops:
            tpl = rng.choice(ADD) if op == "+" else rng.choice(SUB) if op == "-" else MUL[x]
            parts.append(tpl.format(n=self.name, b=x, o=self.obj))
        parts.append(f"How many {self.obj} does {self.name} have?")
        return " ".join(parts)

    def key(self) -> str:
        return f"{self.name}|{self.obj}|{self.start}|" + "|".join(f"{op}{x}" for op, x in self.ops)

    def split(self) -> str:
        h = int.from_bytes(hashlib.sha256(self.key().encode()).digest()[:8], "big")
        return "test" if h % TEST_FRACTION == 0 else "train"

    # --- solution styles -------------------------------------------------------------------
    def step(self) -> str:
        vals = self.values()
        eqs = [f"{vals[i]}{op}{x}={vals[i + 1]}." for i, (op, x) in enumerate(self.ops)]
        return f"{FORCED_STEP_PREFIX} " + " ".join(eqs) + f" #### {self.answer}"

    def direct(self) -> str:
        return f"#### {self.answer}"

    def verbose(self) -> str:
        vals = self.values()
        out = [f"{self.name} starts with {self.start} {self.obj}."]
        for i, (op, x) in enumerate(self.ops):
            a, b = vals[i], vals[i + 1]
            verb = {"+": f"gets {x} more", "-": f"has {x} fewer", "*": f"has {x} times as many"}[op]
            out.append(f"Then {self.name} {verb}, so {a}{op}{x}=<<{a}{op}{x}={b}>>{b} {self.obj}.")
        return " ".join(out) + f"\n#### {self.answer}"

    def solution(self, style: str) -> str:
        if style not in ("step", "direct", "verbose"):
            raise ValueError(f"style must be step, direct or verbose, got {style!r}")
        return getattr(self, style)()


def make_problem(rng: random.Random, cfg: ArithConfig) -> Problem:
    n_steps = rng.randint(cfg.min_steps, cfg.max_steps)
    value = rng.randint(*cfg.start_range)
    start = value
    ops: list[tuple[str, int]] = []
    used_mul = False
    for _ in range(n_steps):
        choices = ["+"]
        if value - cfg.operand_range[0] >= 1:
            choices.append("-")
        if not used_mul and cfg.max_multiplier > 1 and value * 2 < cfg.max_value:
            choices.append("*")
        op = rng.choice(choices)
        if op == "+":
            x = rng.randint(*cfg.operand_range)
            value += x
        elif op == "-":
            x = rng.randint(cfg.operand_range[0], min(cfg.operand_range[1], value - 1))
            value -= x
        else:
            ks = [k for k in range(2, cfg.max_multiplier + 1) if value * k < cfg.max_value]
            x = rng.choice(ks)
            value *= x
            used_mul = True
        ops.append((op, x))
    return Problem(rng.choice(NAMES), rng.choice(OBJECTS), start, ops)


def problems(split: str, n: int, seed: int = 0, cfg: ArithConfig | None = None, offset: int = 0) -> list[Problem]:
    """The first ``n`` problems of ``split`` (after skipping ``offset``) in the seeded stream."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    cfg = cfg or ArithConfig()
    out: list[Problem] = []
    seen = 0
    i = 0
    while len(out) < n:
        p = make_problem(random.Random(f"{seed}:{i}"), cfg)
        i += 1
        if p.split() == split:
            if seen >= offset:
                out.append(p)
            seen += 1
    return out
