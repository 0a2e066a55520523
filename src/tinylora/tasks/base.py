"""The Task protocol: a task owns its data, its prompt, its answer checking and its reward.

``score`` is the only judge: the trainers' reward and the evaluation harness both call it, so a
completion is scored identically in training and evaluation.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from .._core.errors import TinyLoRAError

DATA_DIR_ENV = "TINYLORA_DATA_DIR"


class TaskDataError(TinyLoRAError, ValueError):
    """Bad task data: missing file or field, empty file, a line that is not JSON."""


@dataclass
class Example:
    id: str
    question: str
    answer: str  # the reference final answer, as the task's score expects it
    solution: str | None = None  # a worked reference solution, when the data has one (SFT)
    meta: dict[str, Any] = field(default_factory=dict)


def read_jsonl(path: str | os.PathLike, required: tuple[str, ...] = ()) -> list[dict]:
    """Rows of a JSONL file; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise TaskDataError(f"{path}: no such data file")
    rows = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise TaskDataError(f"{path}:{lineno}: not valid JSON ({e.msg}): {line[:80]!r}") from e
            if not isinstance(row, dict):
                raise TaskDataError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            missing = [k for k in required if k not in row]
            if missing:
                raise TaskDataError(f"{path}:{lineno}: missing field(s) {missing}; the row has {sorted(row)}")
            rows.append(row)
    if not rows:
        raise TaskDataError(f"{path}: the file has no examples")
    return rows


class Task:
    """Base class. Subclasses set ``name``, implement ``load``/``extract``/``score``.

    Prompt wording lives in ``system`` and ``template`` (``{question}`` is filled in), which are
    part of the task's config: pass them to ``tasks.get(name, template=...)`` to change them.
    """

    name: ClassVar[str] = ""
    hf_id: ClassVar[tuple[str, str | None] | None] = None  # (dataset id, config name) on the hub
    splits: ClassVar[tuple[str, ...]] = ("test",)
    system: str | None = None
    template: str = "{question}"
    stop: tuple[str, ...] = ()  # strings that end a completion (text after them is dropped)

    def __init__(self, data_dir: str | os.PathLike | None = None, system: str | None = None,
                 template: str | None = None):
        self.data_dir = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV)
        if system is not None:
            self.system = system
        if template is not None:
            if "{question}" not in template:
                raise ValueError(f"template must contain '{{question}}', got {template!r}")
            self.template = template

    # --- data -----------------------------------------------------------------------------
    def local_file(self, split: str) -> Path | None:
        """``<data_dir>/<split>.jsonl`` or ``<data_dir>/<task>/<split>.jsonl``, if it exists."""
        if self.data_dir is None:
            return None
        base = Path(self.data_dir)
        for p in (base / f"{split}.jsonl", base / self.name / f"{split}.jsonl"):
            if p.is_file():
                return p
        raise TaskDataError(f"no {split}.jsonl for task {self.name!r} under {base} (looked in {base} and "
                            f"{base / self.name})")

    def raw_rows(self, split: str) -> list[dict]:
        if split not in self.splits:
            raise ValueError(f"task {self.name!r} has splits {self.splits}, not {split!r}")
        local = self.local_file(split)
        if local is not None:
            return read_jsonl(local, self.required_fields)
        if self.hf_id is None:
            raise TaskDataError(f"task {self.name!r} needs data_dir=… (no hub dataset is known)")
        try:
            import datasets

            ds = datasets.load_dataset(self.hf_id[0], self.hf_id[1], split=split)
        except Exception as e:  # no `datasets`, no network, no such split: say what to do
            raise TaskDataError(
                f"could not load {self.hf_id[0]!r} from the Hugging Face hub ({type(e).__name__}: {e}). "
                f"Give a local copy with --data-dir DIR (DIR/{split}.jsonl or DIR/{self.name}/{split}.jsonl), "
                f"or set {DATA_DIR_ENV}."
            ) from e
        return [dict(r) for r in ds]

    required_fields: ClassVar[tuple[str, ...]] = ()

    def load(self, split: str = "test") -> list[Example]:
        raise NotImplementedError

    # --- prompts --------------------------------------------------------------------------
    def user_text(self, example: Example) -> str:
        return self.template.format(question=example.question)

    def prompt(self, example: Example, tokenizer=None) -> str:
        """The model's input: its chat template when the tokenizer has one, else plain text."""
        user = self.user_text(example)
        if tokenizer is not None and getattr(tokenizer, "chat_template", None):
            messages = ([{"role": "system", "content": self.system}] if self.system else []) + [
                {"role": "user", "content": user}]
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return (f"{self.system}\n\n" if self.system else "") + user

    def reference_completion(self, example: Example) -> str:
        """The text SFT teaches after :meth:`prompt` (the model's EOS is appended by the trainer)."""
        if not example.solution:
            raise TaskDataError(f"task {self.name!r}: example {example.id!r} has no reference solution for SFT; "
                                "use sft_source=rejection (the model's own correct samples) instead")
        return example.solution

    def truncate(self, completion: str) -> str:
        cut = min((i for i in (completion.find(s) for s in self.stop) if i >= 0), default=len(completion))
        return completion[:cut]

    # --- judging --------------------------------------------------------------------------
    def extract(self, completion: str) -> str | None:
        raise NotImplementedError

    def score(self, completion: str, reference: str) -> float:
        """1.0 if the completion's final answer equals the reference, else 0.0."""
        raise NotImplementedError

    def score_modes(self, completion: str, reference: str) -> dict[str, float]:
        """Scores of one completion under each reading a task reports side by side (GSM8K: strict and
        flexible, so a format gain is never mistaken for a reasoning gain); none by default."""
        return {}

    # diagnostics a run draws and reports per step (key → label), e.g. the toy's P(step opening)
    curves: ClassVar[dict[str, str]] = {}

    def diagnostics(self, model, tokenizer) -> dict[str, float]:
        """Task-specific numbers logged with every training step (none by default); cheap, and
        computed on fixed training prompts, never on the evaluation split."""
        return {}

    def reward(self, completion: str, reference: str) -> float:
        """The training reward: :meth:`score`, unless a task's evaluation is more lenient than a
        reward may be (GSM8K's last-number fallback is exploitable by RL)."""
        return self.score(completion, reference)

    def config(self) -> dict[str, Any]:
        """What defines this task's behaviour, recorded next to every evaluation."""
        return {"name": self.name, "system": self.system, "template": self.template,
                "data_dir": str(self.data_dir) if self.data_dir else None, "stop": list(self.stop)}
