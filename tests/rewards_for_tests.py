"""Reward functions that tests pass to the jsonl task as ``module:function`` (importable by subprocesses)."""


def even_length(completion: str, answer: str) -> float:
    """About half of a random model's samples: every GRPO group has reward variance, so gradients are non-zero."""
    return float(len(completion) % 2 == 0)
