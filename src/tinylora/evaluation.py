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

from ._core.seeding import stream_key
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


def _complete(model, tokenizer, prompts, samples, temperature, max_new_tokens, seeds, engine):
    """Completions as text, and per completion (tokens generated, whether it hit max_new_tokens)."""
    from .generation.generate import Sampling, generate_tokens

    g = generate_tokens(model, tokenizer, prompts, n=samples, sampling=Sampling(temperature, 1.0, max_new_tokens),
                        seeds=seeds, engine=engine)
    texts = tokenizer.batch_decode(g.new_ids, skip_special_tokens=True)
    eos, lens = tokenizer.eos_token_id, []
    for row in g.new_ids.tolist():
        end = row.index(eos) if eos in row else None
        lens.append((len(row) if end is None else end, end is None and len(row) >= max_new_tokens))
    k = samples
    return ([texts[i * k:(i + 1) * k] for i in range(len(prompts))], [lens[i * k:(i + 1) * k] for i in range(len(prompts))])


def _rate(per_example: list[float], samples: int) -> tuple[float, list[float]]:
    """Mean rate and its 95% interval: Wilson for one sample per example, else normal over examples."""
    n = len(per_example)
    acc = sum(per_example) / n if n else 0.0
    if samples == 1:
        return acc, list(wilson_interval(sum(per_example), n))
    var = sum((p - acc) ** 2 for p in per_example) / max(n - 1, 1)
    half = 1.96 * math.sqrt(var / n) if n else 1.0
    return acc, [max(0.0, acc - half), min(1.0, acc + half)]


def summarize(records: list[dict], samples: int) -> dict[str, Any]:
    """Accuracy with its interval; where the task reports modes (GSM8K strict / flexible), each mode's
    accuracy from the same completions; the mean completion length and the share that hit the cap."""
    out = summarize_scores(records, samples)
    modes = records[0].get("mode_scores") if records else None
    if modes:
        out["modes"] = {}
        for m in modes:
            acc, ci = _rate([sum(r["mode_scores"][m]) / len(r["mode_scores"][m]) for r in records], samples)
            out["modes"][m] = {"accuracy": acc, "ci95": ci}
    if records and "tokens" in records[0]:
        toks = [t for r in records for t in r["tokens"]]
        out["mean_tokens"] = sum(toks) / len(toks)
        out["capped_share"] = sum(c for r in records for c in r["capped"]) / len(toks)
    return out


def summarize_scores(records: list[dict], samples: int) -> dict[str, Any]:
    n = len(records)
    scores = [r["scores"] for r in records]
    acc, ci = _rate([sum(s) / len(s) for s in scores], samples)
    out = {"n": n, "accuracy": acc, "ci95": ci}
    if samples > 1:
        ks = [k for k in (1, 2, 4, 8, 16, 32, 64, 128) if k <= samples]
        out["pass@k"] = {str(k): sum(pass_at_k(len(s), sum(1 for x in s if x >= 1.0), k) for s in scores) / n
                         for k in ks}
    return out


def format_summary(s: dict[str, Any]) -> str:
    """One line: accuracy with its interval, each mode side by side (GSM8K strict | flexible), length, cap."""
    def pct(acc, ci):
        return f"{100 * acc:.1f}% (95% CI {100 * ci[0]:.1f}–{100 * ci[1]:.1f})"

    if s.get("modes"):
        head = " | ".join(f"{m} {pct(v['accuracy'], v['ci95'])}" for m, v in s["modes"].items())
    else:
        head = f"accuracy {pct(s['accuracy'], s['ci95'])}"
    tail = f" on {s['n']} examples"
    if "mean_tokens" in s:
        tail += f"; {s['mean_tokens']:.0f} tokens a completion, {100 * s['capped_share']:.0f}% hit the cap"
    if "pass@k" in s:
        tail += "; pass@k " + ", ".join(f"@{k} {100 * v:.1f}%" for k, v in s["pass@k"].items())
    return head + tail


EVAL_FILES = {"eval_config.json", "examples.jsonl", "summary.json"}


def check_eval_args(*, limit: int | None = None, samples: int = 1, temperature: float = 0.0, batch_size: int = 8,
                    max_new_tokens: int = 256, out_dir: str | Path | None = None) -> None:
    """Refuse what :func:`evaluate` cannot do, before anything slow (the caller runs it before loading
    the model): a limit, sample count, batch or length below 1, several greedy samples, and an
    ``out_dir`` that holds files of something other than an evaluation."""
    for name, v in (("limit", limit), ("samples", samples), ("batch_size", batch_size),
                    ("max_new_tokens", max_new_tokens)):
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}")
    if samples > 1 and temperature <= 0:
        raise ValueError(f"samples={samples} needs a temperature > 0 (greedy samples are all the same); "
                         "give --temperature, e.g. 1.0")
    if out_dir is not None:
        out = Path(out_dir)
        if out.exists() and not out.is_dir():
            raise ValueError(f"out {out} is a file, not a folder")
        if out.is_dir():
            other = sorted(p.name for p in out.iterdir() if p.name not in EVAL_FILES)
            if other:
                raise ValueError(f"out {out} holds files that are not an evaluation ({', '.join(other[:3])}"
                                 f"{' …' if len(other) > 3 else ''}); choose a new or empty folder")


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
    keep_records: bool = False,
) -> dict[str, Any]:
    """Generate, score with ``task.score``, and summarise: accuracy (pass@1) with a 95% interval.

    ``keep_records``: the returned summary also holds ``records`` (one per example, as in
    ``examples.jsonl``; not written to ``summary.json``), for callers that compare completions.

    ``engine`` picks the decode loop (:func:`tinylora.generation.generate.generate_tokens`); the engines give
    the same tokens, so it is not part of the evaluation's identity (a resumed evaluation may switch)."""
    from ._core.distributed import Dist

    dist = dist or Dist()
    check_eval_args(limit=limit, samples=samples, temperature=temperature, batch_size=batch_size,
                    max_new_tokens=max_new_tokens, out_dir=out_dir)
    examples = task.load(split)
    if limit is not None:
        examples = examples[:limit]
    config = {"task": task.config(), "split": split, "limit": limit, "samples": samples,
              "temperature": temperature, "max_new_tokens": max_new_tokens, "seed": seed,
              "model": model_name, "adapter": adapter}
    base_dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    if base_dtype != "float32":  # part of the evaluation's identity (fp32 runs keep their old records)
        config["dtype"] = base_dtype
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
            outs, lengths = _complete(model, tokenizer, prompts, samples, temperature, max_new_tokens, seeds, engine)
            for e, p, raw, lens in zip(batch, prompts, outs, lengths):
                comps = [task.truncate(c) for c in raw]
                # a completion that the task's stop string ended did not hit the cap; its length is
                # that of the kept text (re-tokenized), else the tokens generated up to EOS
                lens = [(n, capped) if c == r else (len(tokenizer(c, add_special_tokens=False)["input_ids"]), False)
                        for (n, capped), c, r in zip(lens, comps, raw)]
                rec = {"id": e.id, "prompt": p, "completions": comps, "extracted": [task.extract(c) for c in comps],
                       "reference": e.answer, "scores": [task.score(c, e.answer) for c in comps],
                       "tokens": [n for n, _ in lens], "capped": [c for _, c in lens]}
                modes = [task.score_modes(c, e.answer) for c in comps]
                if modes and modes[0]:
                    rec["mode_scores"] = {m: [x[m] for x in modes] for m in modes[0]}
                recs.append(rec)
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
    summary = dist.broadcast(summary)
    return {**summary, "records": records} if keep_records else summary
