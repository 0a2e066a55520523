"""Reward functions ``(completion, answer) -> float`` by name, and a guard that keeps a run alive.

A reward that raises or hangs must not end a training run or an evaluation: :class:`GuardedScore`
turns both into a reward of 0, counts them, and keeps the first error messages for the report.
"""

from __future__ import annotations

import importlib
import re
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from .._core.errors import MissingDependencyError, TinyLoRAError  # noqa: F401  (MissingDependencyError: part of this API)
from .answers import extract_final_number, last_boxed, numbers_equal

RewardFn = Callable[[str, str], float]


class RewardTimeout(Exception):
    pass


def require_math_verify() -> None:
    """Raise :class:`MissingDependencyError` (with the install command) unless math-verify imports."""
    try:
        import math_verify  # noqa: F401
    except ImportError as e:
        raise MissingDependencyError(
            "the math-verify package is needed to score \\boxed{} answers (MATH500, AIME24, AMC23, reward 'math') "
            "but is not installed: pip install 'math-verify>=0.7' (a dependency of tinylora; reinstall with "
            "pip install -e .)") from e


def call_with_timeout(fn: Callable[[], float], seconds: float | None) -> float:
    """Run ``fn`` with a wall-clock limit (SIGALRM; main thread only — elsewhere no limit)."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        return fn()

    def on_alarm(signum, frame):
        raise RewardTimeout(f"took longer than {seconds:g} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return fn()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def math_equal(predicted: str | None, reference: str) -> bool:
    r"""Mathematical equivalence via math-verify (``\frac{1}{2}`` = 0.5, intervals, sets, text).

    Both sides are wrapped in ``\boxed{}`` so math-verify parses exactly the answer. The caller
    bounds the time (math-verify's own signal-based timeouts are switched off here).
    """
    if predicted is None:
        return False
    import logging

    require_math_verify()
    from math_verify import parse, verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)  # it warns that we bound time ourselves
    gold = parse(f"\\boxed{{{reference}}}", parsing_timeout=None)
    pred = parse(f"\\boxed{{{predicted}}}", parsing_timeout=None)
    if not gold or not pred:
        return predicted.strip() == reference.strip()
    return bool(verify(gold, pred, timeout_seconds=None))


def exact_reward(completion: str, answer: str) -> float:
    """1 if the stripped completion equals the answer exactly."""
    return float(completion.strip() == str(answer).strip())


def numeric_reward(completion: str, answer: str) -> float:
    """1 if the completion's final number (flexible extraction) equals the answer numerically."""
    return float(numbers_equal(extract_final_number(completion, "flexible"), str(answer)))


def math_reward(completion: str, answer: str) -> float:
    r"""1 if the last ``\boxed{}`` of the completion is mathematically equal to the answer."""
    return float(math_equal(last_boxed(completion), str(answer)))


def regex_reward(pattern: str) -> RewardFn:
    """1 if the pattern's first group (or whole match), last match in the completion, equals the answer."""
    rx = re.compile(pattern)

    def reward(completion: str, answer: str) -> float:
        matches = list(rx.finditer(completion))
        if not matches:
            return 0.0
        m = matches[-1]
        got = m.group(1) if m.groups() else m.group(0)
        return float(got.strip() == str(answer).strip() or numbers_equal(got, str(answer)))

    return reward


REWARDS: dict[str, RewardFn] = {"exact": exact_reward, "numeric": numeric_reward, "math": math_reward}
NEEDS: dict[str, Callable[[], None]] = {"math": require_math_verify}  # checked when the reward is chosen


def get_reward(spec: str) -> RewardFn:
    """``exact`` | ``numeric`` | ``math`` | ``regex:<pattern>`` | ``package.module:function`` (or dotted)."""
    if spec in REWARDS:
        if spec in NEEDS:
            NEEDS[spec]()
        return REWARDS[spec]
    if spec.startswith("regex:"):
        try:
            return regex_reward(spec[len("regex:"):])
        except re.error as e:
            raise ValueError(f"bad regex in reward {spec!r}: {e}") from e
    module_name, sep, attr = spec.partition(":")
    if not sep:
        module_name, _, attr = spec.rpartition(".")
    if not module_name or not attr:
        raise ValueError(f"unknown reward {spec!r}: use {sorted(REWARDS)}, regex:<pattern>, or module:function")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"cannot import reward function {spec!r}: {e}") from e
    if not callable(fn):
        raise ValueError(f"reward {spec!r} is not callable")
    return fn


@dataclass
class GuardedScore:
    """Wraps a score function: exceptions and time-outs give 0.0 and are counted, never raised."""

    fn: RewardFn
    timeout: float | None = 10.0
    calls: int = 0
    errors: int = 0
    timeouts: int = 0
    messages: list[str] = field(default_factory=list)

    def __call__(self, completion: str, reference: str) -> float:
        self.calls += 1
        try:
            value = float(call_with_timeout(lambda: self.fn(completion, reference), self.timeout))
        except RewardTimeout as e:
            self.timeouts += 1
            self._note(f"timeout: {e}")
            return 0.0
        except MissingDependencyError:  # the scorer cannot run at all: every reward would be a false 0
            raise
        except Exception as e:  # a user's reward may raise anything
            self.errors += 1
            self._note(f"{type(e).__name__}: {e}")
            return 0.0
        if value != value:  # NaN
            self.errors += 1
            self._note("reward returned NaN")
            return 0.0
        return value

    def _note(self, msg: str) -> None:
        if len(self.messages) < 5:
            self.messages.append(msg)

    def report(self) -> dict:
        return {"calls": self.calls, "errors": self.errors, "timeouts": self.timeouts, "messages": self.messages}


class TaskReward:
    """The training reward of a task: its own ``reward`` (its ``score``, or stricter where the score's
    leniency could be exploited), guarded.

    ``reward(completions, references) -> list[float]``; failures score 0 and are counted in
    ``report()``, never raised mid-run.
    """

    def __init__(self, task, timeout: float | None = 10.0):
        self.task = task
        self.guard = GuardedScore(task.reward, timeout=timeout)

    def __call__(self, completions: list[str], references: list[str]) -> list[float]:
        if len(completions) != len(references):
            raise ValueError(f"{len(completions)} completions but {len(references)} references")
        return [self.guard(self.task.truncate(c), r) for c, r in zip(completions, references)]

    def report(self) -> dict:
        return self.guard.report()
