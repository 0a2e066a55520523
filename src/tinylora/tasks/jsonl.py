"""A user's own task: a JSONL file of prompts and answers, and a reward chosen by name or path."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from .answers import extract_final_number, last_boxed
from .base import Example, Task, TaskDataError, read_jsonl
from .rewards import GuardedScore, get_reward


class JSONLTask(Task):
    """``path``: a .jsonl file (used for every split) or a folder of ``<split>.jsonl`` files.

    ``reward``: ``exact`` | ``numeric`` | ``math`` | ``regex:<pattern>`` | ``module:function``. A
    reward that raises or exceeds ``timeout`` seconds scores 0; ``reward_report()`` counts them.
    """

    name: ClassVar[str] = "jsonl"
    splits = ("train", "validation", "test")

    def __init__(self, path: str | None = None, prompt_field: str = "prompt", answer_field: str = "answer",
                 reward: str = "exact", timeout: float = 10.0, data_dir=None, **kw):
        path = path or data_dir
        if path is None:
            raise TaskDataError("the jsonl task needs path=FILE.jsonl (or a folder of <split>.jsonl files)")
        super().__init__(None, **kw)
        self.path = Path(path)
        self.prompt_field, self.answer_field = prompt_field, answer_field
        self.reward_spec = reward
        self.guard = GuardedScore(get_reward(reward), timeout=timeout)

    def load(self, split: str = "test") -> list[Example]:
        file = self.path if self.path.is_file() else self.path / f"{split}.jsonl"
        rows = read_jsonl(file, (self.prompt_field, self.answer_field))
        return [Example(id=str(r.get("id", i)), question=str(r[self.prompt_field]), answer=str(r[self.answer_field]),
                        solution=r.get("solution"))
                for i, r in enumerate(rows)]

    def extract(self, completion: str) -> str | None:
        if self.reward_spec == "math":
            return last_boxed(completion)
        if self.reward_spec == "numeric":
            return extract_final_number(completion)
        return completion.strip()

    def score(self, completion: str, reference: str) -> float:
        return self.guard(completion, reference)

    def reward_report(self) -> dict:
        return self.guard.report()

    def config(self):
        return {**super().config(), "path": str(self.path), "prompt_field": self.prompt_field,
                "answer_field": self.answer_field, "reward": self.reward_spec, "timeout": self.guard.timeout}
