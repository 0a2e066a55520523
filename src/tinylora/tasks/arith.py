"""The ``arith`` task: the toy world's problems behind the same Task protocol and score as GSM8K."""

from __future__ import annotations

from typing import ClassVar

from .arith_problems import FORCED_STEP_PREFIX, ArithConfig, problems
from .base import Example
from .gsm8k import GSM8K


class ArithTask(GSM8K):
    """Procedural multi-step arithmetic; references are ``#### N`` and scoring is GSM8K's.

    The prompt is ``Q: <question>\\nA:`` (the format the toy backbone was pretrained on).
    ``forced=True`` appends the step-by-step opening, which measures the latent skill.
    ``reference_style`` picks the ``solution`` text given to SFT (``verbose`` by default: a style
    the backbone never saw in pretraining).

    ``validation`` (for choosing learning rates without touching ``test``) is the next ``n_val``
    test-hashed problems after the test set: never pretrained on, and none equal to a test problem.
    """

    name: ClassVar[str] = "arith"
    hf_id = None
    splits = ("train", "validation", "test")
    template = "Q: {question}\nA:"
    stop = ("\nQ:",)
    curves = {"p_step": "P(step opening)"}

    def __init__(self, data_dir=None, seed: int = 0, n_train: int = 20000, n_test: int = 500,
                 n_val: int = 500,
                 mode: str = "strict", forced: bool = False, reference_style: str = "verbose",
                 min_steps: int = 2, max_steps: int = 3, **kw):
        super().__init__(data_dir, mode=mode, **kw)
        self.seed, self.n_train, self.n_test, self.n_val, self.forced = seed, n_train, n_test, n_val, forced
        self.reference_style = reference_style
        self.arith = ArithConfig(min_steps=min_steps, max_steps=max_steps)

    def load(self, split: str = "test") -> list[Example]:
        if split not in self.splits:
            raise ValueError(f"task 'arith' has splits {self.splits}, not {split!r}")
        if split == "validation":
            test_keys = {p.key() for p in problems("test", self.n_test, self.seed, self.arith)}
            extra = problems("test", self.n_val, self.seed, self.arith, offset=self.n_test)
            chosen = [p for p in extra if p.key() not in test_keys]
        else:
            chosen = problems(split, self.n_test if split == "test" else self.n_train, self.seed, self.arith)
        return [Example(id=f"{split}-{i}", question=p.question, answer=str(p.answer),
                        solution=p.solution(self.reference_style), meta={"steps": len(p.ops)})
                for i, p in enumerate(chosen)]

    def prompt(self, example: Example, tokenizer=None) -> str:
        """The plain pretraining format for the toy backbone (its tokenizer has no chat template);
        an instruct model's chat template when its tokenizer has one, as every other task does."""
        text = super().prompt(example, tokenizer)
        return text + (" " + FORCED_STEP_PREFIX if self.forced else "")

    def diagnostics(self, model, tokenizer) -> dict[str, float]:
        """P(step-by-step opening) on 64 fixed training prompts, and how often greedy decoding picks it:
        the one choice that separates free from forced accuracy in the toy world."""
        if self.forced or getattr(tokenizer, "chat_template", None):
            return {}
        was_training = model.training
        model.eval()
        s = style_probability(model, tokenizer, n=64, split="train", seed=self.seed)
        model.train(was_training)
        return {"p_step": s["p_step"], "greedy_picks_step": s["greedy_picks_step"]}

    def reference_completion(self, example: Example) -> str:
        return " " + super().reference_completion(example)  # the prompt ends with "A:"

    def config(self):
        return {**super().config(), "seed": self.seed, "n_train": self.n_train, "n_test": self.n_test,
                "n_val": self.n_val,
                "forced": self.forced, "reference_style": self.reference_style, "arith": self.arith.to_dict()}


def style_probability(model, tokenizer, n: int = 64, split: str = "test", seed: int = 0) -> dict:
    """Mean P(step-by-step opening) after ``A: `` on ``n`` problems, and how often greedy picks it.

    The toy world's whole free-vs-forced gap sits in this one choice (``S`` of "Step by step:" vs
    ``#`` of "#### N"), so this is the quantity a tiny update has to move.
    """
    import torch

    ps = problems(split, n, seed)
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        enc = tokenizer([f"Q: {p.question}\nA: " for p in ps], return_tensors="pt", padding=True,
                        add_special_tokens=False).to(next(model.parameters()).device)
    finally:
        tokenizer.padding_side = side
    pos = (enc["attention_mask"].cumsum(-1) - 1).clamp_min(0)
    s_id, h_id = tokenizer.convert_tokens_to_ids("S"), tokenizer.convert_tokens_to_ids("#")
    with torch.no_grad():
        logp = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                     position_ids=pos).logits[:, -1].float().log_softmax(-1)
    return {"p_step": round(float(logp[:, s_id].exp().mean()), 4),
            "greedy_picks_step": round(float((logp[:, s_id] > logp[:, h_id]).float().mean()), 4), "n": n}
