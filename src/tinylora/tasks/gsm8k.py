"""GSM8K (Cobbe et al. 2021): grade-school word problems with a numeric final answer."""

from __future__ import annotations

from typing import ClassVar

from .answers import extract_final_number, extract_hash_answer, numbers_equal
from .base import Example, Task, TaskDataError


class GSM8K(Task):
    """References are the number after the last ``####`` of the gold solution.

    ``mode="flexible"`` (default) reads the last ``#### N``, else ``\\boxed{N}``, else "the answer
    is N", else the last number: instruction-tuned models often answer correctly without the
    ``####`` marker, and the marker-first order still never takes an intermediate number over a
    marked answer. ``mode="strict"`` (only ``#### N``) reproduces verl's GSM8K reward, which also
    rewards following the format.

    The *training* reward never uses the last-number fallback: it takes an answer only from an
    explicit marker (``####``, ``\\boxed{}``, "the answer is"), since a policy can learn to list
    numbers or stop mid-sentence for credit. The fallback is for evaluation only.
    """

    name: ClassVar[str] = "gsm8k"
    hf_id = ("openai/gsm8k", "main")
    splits = ("train", "test")
    required_fields = ("question", "answer")
    template = '{question}\nLet\'s think step by step and output the final answer after "####".'

    def __init__(self, data_dir=None, mode: str = "flexible", **kw):
        super().__init__(data_dir, **kw)
        if mode not in ("strict", "flexible"):
            raise ValueError(f"mode must be 'strict' or 'flexible', got {mode!r}")
        self.mode = mode

    def load(self, split: str = "test") -> list[Example]:
        out = []
        for i, row in enumerate(self.raw_rows(split)):
            ref = extract_hash_answer(row["answer"])
            if ref is None:
                raise TaskDataError(f"gsm8k {split} row {i + 1}: reference solution has no '#### N' answer")
            out.append(Example(id=f"{split}-{i}", question=row["question"], answer=ref, solution=row["answer"]))
        return out

    def extract(self, completion: str) -> str | None:
        return extract_final_number(completion, self.mode)

    def score(self, completion: str, reference: str) -> float:
        return float(numbers_equal(self.extract(completion), reference))

    def score_modes(self, completion: str, reference: str) -> dict[str, float]:
        """strict: only ``#### N`` counts (the asked-for format); flexible: any final-answer reading."""
        return {m: float(numbers_equal(extract_final_number(completion, m), reference)) for m in ("strict", "flexible")}

    def reward(self, completion: str, reference: str) -> float:
        mode = "strict" if self.mode == "strict" else "marked"
        return float(numbers_equal(extract_final_number(completion, mode), reference))

    def config(self):
        return {**super().config(), "mode": self.mode,
                "reward_mode": "strict" if self.mode == "strict" else "marked (no last-number fallback)"}
