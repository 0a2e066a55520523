"""How much of the toy backbone's skill shows: free vs forced step-by-step accuracy, and the style choice."""

from __future__ import annotations

from ..evaluation import evaluate
from ..models.loading import load_model, load_tokenizer
from ..tasks.arith import ArithTask, style_probability


def toy_report(model_path: str = "toy", n: int = 500, seed: int = 0, batch_size: int = 64,
               adapter: str | None = None, max_new_tokens: int = 96, progress: bool = True) -> dict:
    """Accuracy on ``n`` held-out problems: greedy, temperature 1, forced step-by-step; and the style choice."""
    import torch

    from ..evaluation import check_eval_args

    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n (held-out problems) must be a positive integer, got {n!r}")
    check_eval_args(batch_size=batch_size, max_new_tokens=max_new_tokens)  # before the load
    if adapter:
        from ..adapters.file import read

        read(adapter)
    tok = load_tokenizer(model_path)
    model = load_model(model_path)
    if adapter:
        from ..adapters.file import load

        load(model, adapter)
    out = {"model": model_path, "adapter": adapter, "n": n}
    runs = {
        "free_greedy": dict(task=ArithTask(n_test=n), temperature=0.0),
        "free_temp1": dict(task=ArithTask(n_test=n), temperature=1.0),
        "forced_step_greedy": dict(task=ArithTask(n_test=n, forced=True), temperature=0.0),
    }
    for name, kw in runs.items():
        torch.manual_seed(seed)
        s = evaluate(model, tok, kw["task"], temperature=kw["temperature"], batch_size=batch_size,
                     max_new_tokens=max_new_tokens, seed=seed, progress=progress)
        out[name] = {"accuracy": round(s["accuracy"], 4), "ci95": [round(x, 4) for x in s["ci95"]]}
    out["style"] = style_probability(model, tok, n=min(n, 200))
    return out
