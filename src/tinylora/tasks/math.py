r"""MATH500, AIME24 and AMC23: the final answer in ``\boxed{...}``, checked with math-verify."""

from __future__ import annotations

from typing import ClassVar

from .answers import last_boxed, normalize_number
from .base import Example, Task
from .rewards import (
    MissingDependencyError,
    call_with_timeout,
    math_equal,
    require_math_verify,
)


class BoxedMathTask(Task):
    """Shared logic: extract the last ``\\boxed{}``; equivalence by math-verify with a time limit."""

    template = "{question}\nPlease reason step by step, and put your final answer within \\boxed{{}}."
    question_field: ClassVar[str] = "problem"
    required_fields = ("problem", "answer")

    def __init__(self, data_dir=None, timeout: float = 5.0, **kw):
        super().__init__(data_dir, **kw)
        require_math_verify()  # fail now, not with a reward of 0 for every completion
        self.timeout = timeout

    def reference_of(self, row: dict) -> str:
        return str(row["answer"])

    def load(self, split: str = "test") -> list[Example]:
        out = []
        for i, row in enumerate(self.raw_rows(split)):
            rid = row.get("unique_id", row.get("id", i))
            out.append(Example(id=str(rid), question=row[self.question_field], answer=self.reference_of(row),
                               solution=row.get("solution"), meta={k: row[k] for k in ("subject", "level") if k in row}))
        return out

    def extract(self, completion: str) -> str | None:
        return last_boxed(completion)

    def score(self, completion: str, reference: str) -> float:
        """math-verify equivalence; no ``\\boxed{}``, a check over ``timeout`` seconds, or an expression
        math-verify cannot parse scores 0; a missing math-verify is an error."""
        predicted = self.extract(completion)
        if predicted is None:
            return 0.0
        require_math_verify()  # imported (seconds, cold) before the clock starts: the limit is the check's
        import math_verify  # noqa: F401
        try:
            return float(call_with_timeout(lambda: math_equal(predicted, reference), self.timeout))
        except MissingDependencyError:
            raise
        except Exception:  # RewardTimeout, or a parser failure on a pathological expression
            return 0.0

    def config(self):
        return {**super().config(), "timeout": self.timeout}


class MATH500(BoxedMathTask):
    name: ClassVar[str] = "math500"
    hf_id = ("HuggingFaceH4/MATH-500", None)


class AIME24(BoxedMathTask):
    """AIME answers are integers; the data stores some zero-padded ("025"): compare as numbers."""

    name: ClassVar[str] = "aime24"
    hf_id = ("HuggingFaceH4/aime_2024", None)
    splits = ("test", "train")

    def reference_of(self, row: dict) -> str:
        return normalize_number(str(row["answer"])) or str(row["answer"])


class AMC23(BoxedMathTask):
    """AMC answers are stored as floats (27.0); all are integer-valued, so compare as numbers."""

    name: ClassVar[str] = "amc23"
    hf_id = ("math-ai/amc23", None)
    question_field = "question"
    required_fields = ("question", "answer")

    def reference_of(self, row: dict) -> str:
        return normalize_number(str(row["answer"])) or str(row["answer"])
