"""The evaluation harness: a model (optionally with an adapter) on a task, scored by the task.

Writes ``examples.jsonl`` (one line per example, appended as batches finish, so a killed run loses
at most one batch) and ``summary.json``. Re-running with the same ``out_dir`` skips finished
examples; a different configuration in the same folder is refused rather than mixed.

Under ``torchrun`` the examples are split across ranks (each example's seed comes from its position,
not its rank), the records are gathered to rank 0 after every round of batches, and only rank 0
touches ``out_dir``; every rank returns the same summary.
"""

from __future__ import annotations

import json
import math
import platform
import time
from pathlib import Path
from typing import Any

from .generation import generate_texts
from .seeding import stream_key
from .tasks.base import Task


def wilson_interval(k: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for k successes in n trials (sane at 0 and n, unlike Wald)."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): 1 − C(n−c, k) / C(n, k) for n samples with c correct."""
    if k > n:
        raise ValueError(f"k={k} exceeds the {n} samples")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def versions() -> dict[str, str]:
    import torch
    import transformers

    from . import __version__

    return {"tinylora": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version()}


def _read_done(path: Path) -> dict[str, dict]:
    """Finished records; a line cut by a kill is dropped (its example is redone) and the file rewritten."""
    done: dict[str, dict] = {}
    if not path.exists():
        return done
    text = path.read_text()
    for line in text.splitlines():
        try:
            rec = json.loads(line)
            done[rec["id"]] = rec
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    clean = "".join(json.dumps(r) + "\n" for r in done.values())
    if clean != text:
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text(clean)
        tmp.replace(path)
    return done


def summarize(records: list[dict], samples: int) -> dict[str, Any]:
    n = len(records)
    scores = [r["scores"] for r in records]
    per_example = [sum(s) / len(s) for s in scores]
    acc = sum(per_example) / n if n else 0.0
    if samples == 1:
        lo, hi = wilson_interval(sum(per_example), n)
    else:  # mean of per-example rates: normal approximation over examples
        var = sum((p - acc) ** 2 for p in per_example) / max(n - 1, 1)
        half = 1.96 * math.sqrt(var / n) if n else 1.0
        lo, hi = max(0.0, acc - half), min(1.0, acc + half)
    out = {"n": n, "accuracy": acc, "ci95": [lo, hi]}
    if samples > 1:
        ks = [k for k in (1, 2, 4, 8, 16, 32, 64, 128) if k <= samples]
        out["pass@k"] = {str(k): sum(pass_at_k(len(s), sum(1 for x in s if x >= 1.0), k) for s in scores) / n
                         for k in ks}
    return out


def evaluate(
    model,
    tokenizer,
    task: Task,
    *,
    split: str = "test",
    limit: int | None = None,
    samples: int = 1,
    temperature: float = 0.0,
    batch_size: int = 8,
    max_new_tokens: int = 256,
    seed: int = 0,
    out_dir: str | Path | None = None,
    progress: bool = True,
    model_name: str | None = None,
    adapter: str | None = None,
    dist=None,
    engine: str = "auto",
) -> dict[str, Any]:
    """Generate, score with ``task.score``, and summarise: accuracy (pass@1) with a 95% interval.

    ``engine`` picks the decode loop (:func:`tinylora.generation.generate_tokens`); the engines give
    the same tokens, so it is not part of the evaluation's identity (a resumed evaluation may switch)."""
    from .distributed import Dist

    dist = dist or Dist()
    if samples < 1 or batch_size < 1 or max_new_tokens < 1:
        raise ValueError("samples, batch_size and max_new_tokens must be positive")
    examples = task.load(split)
    if limit is not None:
        examples = examples[:limit]
    config = {"task": task.config(), "split": split, "limit": limit, "samples": samples,
              "temperature": temperature, "max_new_tokens": max_new_tokens, "seed": seed,
              "model": model_name, "adapter": adapter}
    records_path, done, error = None, {}, None
    if out_dir is not None and dist.is_main:  # rank 0 alone reads and writes the folder
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        cfg_path = out / "eval_config.json"
        if cfg_path.exists():
            old = json.loads(cfg_path.read_text())
            if old != json.loads(json.dumps(config)):
                error = (f"{out} holds an evaluation with another configuration ({cfg_path}); "
                         "use a new --out folder")
        else:
            cfg_path.write_text(json.dumps(config, indent=2))
        records_path = out / "examples.jsonl"
        if error is None:
            done = _read_done(records_path)
    done_ids, error = dist.broadcast((sorted(done), error))  # every rank raises, or none does
    if error:
        raise ValueError(error)
    position = {e.id: i for i, e in enumerate(examples)}
    skip = set(done_ids)
    todo = [e for e in examples if e.id not in skip]
    mine = dist.shard(todo)
    rounds = math.ceil(math.ceil(len(todo) / dist.world) / batch_size)  # the same on every rank

    bar = None
    if progress and dist.is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(examples), initial=len(examples) - len(todo), desc=f"eval {task.name}",
                   unit="ex", dynamic_ncols=True)
    t0 = time.time()
    new_records = []
    for k in range(rounds):
        batch = mine[k * batch_size:(k + 1) * batch_size]
        recs = []
        if batch:
            prompts = [task.prompt(e, tokenizer) for e in batch]
            # per-sample seeds from (seed, example position, sample): resumed or sharded, the same samples
            seeds = [stream_key(seed, position[e.id], s) for e in batch for s in range(samples)]
            outs = generate_texts(model, tokenizer, prompts, n=samples, temperature=temperature,
                                  max_new_tokens=max_new_tokens, seeds=seeds, engine=engine)
            for e, p, comps in zip(batch, prompts, outs):
                comps = [task.truncate(c) for c in comps]
                recs.append({"id": e.id, "prompt": p, "completions": comps, "extracted": [task.extract(c) for c in comps],
                             "reference": e.answer, "scores": [task.score(c, e.answer) for c in comps]})
        recs = sorted((r for part in dist.gather(recs) for r in part), key=lambda r: position[r["id"]])
        new_records += recs
        if records_path is not None and recs:
            with records_path.open("a") as f:
                f.write("".join(json.dumps(r) + "\n" for r in recs))
        if bar is not None:
            bar.update(len(recs))
            allrec = list(done.values()) + new_records
            bar.set_postfix(acc=f"{sum(sum(r['scores']) / len(r['scores']) for r in allrec) / len(allrec):.3f}")
    if bar is not None:
        bar.close()
    if not dist.is_main:  # rank 0 has the finished records from earlier runs: it summarises
        return dist.broadcast(None)
    by_id = {**done, **{r["id"]: r for r in new_records}}
    records = [by_id[e.id] for e in examples]
    summary = {**config, **summarize(records, samples), "resumed": len(done), "seconds": round(time.time() - t0, 2),
               "versions": versions()}
    if hasattr(task, "reward_report"):
        summary["reward_failures"] = task.reward_report()
    if out_dir is not None:
        (Path(out_dir) / "summary.json").write_text(json.dumps(summary, indent=2))
    return dist.broadcast(summary)
