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

    GSM8K has no validation split, so ``validation`` is carved from the end of the train file:
    its last ``val_size`` rows (500 by default), which ``train`` then leaves out. Choose learning
    rates, steps or checkpoints there, never on ``test``. ``val_size=0`` trains on all 7,473.
    """

    name: ClassVar[str] = "gsm8k"
    hf_id = ("openai/gsm8k", "main")
    splits = ("train", "validation", "test")
    required_fields = ("question", "answer")
    template = '{question}\nLet\'s think step by step and output the final answer after "####".'

    def __init__(self, data_dir=None, mode: str = "flexible", val_size: int = 500, **kw):
        super().__init__(data_dir, **kw)
        if mode not in ("strict", "flexible"):
            raise ValueError(f"mode must be 'strict' or 'flexible', got {mode!r}")
        if isinstance(val_size, bool) or not isinstance(val_size, int) or val_size < 0:
            raise ValueError(f"val_size must be an integer >= 0, got {val_size!r}")
        self.mode, self.val_size = mode, val_size

    def load(self, split: str = "test") -> list[Example]:
        if split == "validation" and self.val_size == 0:
            raise ValueError("task 'gsm8k' has no validation split with val_size=0")
        rows, first = self.raw_rows("train" if split == "validation" else split), 0
        if split in ("train", "validation"):
            if self.val_size >= len(rows):
                raise ValueError(f"val_size={self.val_size} leaves no training rows (the train file has {len(rows)})")
            cut = len(rows) - self.val_size
            rows, first = (rows[cut:], cut) if split == "validation" else (rows[:cut], 0)
        out = []
        for i, row in enumerate(rows):
            ref = extract_hash_answer(row["answer"])
            if ref is None:
                raise TaskDataError(f"gsm8k {split} (file row {first + i + 1}): reference solution has no '#### N' answer")
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
        return {**super().config(), "mode": self.mode, "val_size": self.val_size,
                "reward_mode": "strict" if self.mode == "strict" else "marked (no last-number fallback)"}
