"""``audit``: the adapted model against its base on three prompt sets, as one JSON-able report.

Keys (stable; ``docs/audit.md`` documents them): ``adapter`` (:func:`.facts.adapter_facts`),
``kl_mean`` / ``kl_p95`` / ``kl_max`` / ``changed_share`` (off-task drift, :mod:`.drift`) with
``drift`` holding the details, ``refusal_before`` / ``refusal_after`` (behaviour probes, ``None``
when the model has no chat template) with ``probes`` holding the details, and ``task`` (``None``
without one): accuracy before → after with intervals, each mode (GSM8K strict | flexible), mean
length, and a few completions that changed, at their first divergent token.
"""

from __future__ import annotations

import time
from typing import Any

from ..evaluation import wilson_interval
from ..generation.generate import Sampling, generate_tokens
from .drift import base_of, build_reference, drift, load_prompts, render
from .facts import adapter_facts
from .probes import is_refusal


def probe_refusals(model, tokenizer, prompts: list[str], *, max_new_tokens: int = 48, batch_size: int = 16,
                   engine: str = "auto") -> dict[str, Any]:
    """Greedy completions of ``prompts`` by the base and by the adapted model, and which refuse."""
    texts = render(prompts, tokenizer)

    def complete() -> list[str]:
        outs = []
        for k in range(0, len(texts), batch_size):
            g = generate_tokens(model, tokenizer, texts[k:k + batch_size],
                                sampling=Sampling(0.0, 1.0, max_new_tokens), engine=engine)
            outs += tokenizer.batch_decode(g.new_ids, skip_special_tokens=True)
        return outs

    with base_of(model):
        before = complete()
    after = complete()
    rb, ra = [is_refusal(t) for t in before], [is_refusal(t) for t in after]
    n = len(prompts)
    return {"n": n, "refusal_before": sum(rb) / n, "refusal_after": sum(ra) / n,
            "ci95_before": list(wilson_interval(sum(rb), n)), "ci95_after": list(wilson_interval(sum(ra), n)),
            "flipped": [{"prompt": p, "before": b, "after": a, "refused_before": x, "refused_after": y}
                        for p, b, a, x, y in zip(prompts, before, after, rb, ra) if x != y],
            "text_changed": sum(b != a for b, a in zip(before, after))}


def _first_divergence(tokenizer, a: str, b: str) -> dict[str, Any] | None:
    ta = tokenizer(a, add_special_tokens=False)["input_ids"]
    tb = tokenizer(b, add_special_tokens=False)["input_ids"]
    i = next((k for k, (x, y) in enumerate(zip(ta, tb)) if x != y), None)
    if i is None:
        if len(ta) == len(tb):
            return None
        i = min(len(ta), len(tb))
    tok = (lambda ids: tokenizer.decode(ids[i:i + 1]) if i < len(ids) else "<end>")
    return {"token": i, "context": tokenizer.decode(ta[max(0, i - 8):i]), "base": tok(ta), "adapted": tok(tb)}


def task_effect(model, tokenizer, task, *, split: str = "test", limit: int | None = 100, batch_size: int = 8,
                max_new_tokens: int = 256, engine: str = "auto", examples: int = 5, progress: bool = True) -> dict:
    """Greedy accuracy of the base and of the adapted model on ``task`` (every mode the task scores),
    the mean completion length of each, and up to ``examples`` completions that changed."""
    from ..evaluation import evaluate

    kw = dict(split=split, limit=limit, batch_size=batch_size, max_new_tokens=max_new_tokens, engine=engine,
              progress=progress, keep_records=True)
    with base_of(model):
        before = evaluate(model, tokenizer, task, **kw)
    after = evaluate(model, tokenizer, task, **kw)

    def part(s: dict) -> dict:
        return {"accuracy": s["accuracy"], "ci95": s["ci95"], "modes": s.get("modes"),
                "mean_tokens": s.get("mean_tokens"), "capped_share": s.get("capped_share")}

    return {"name": task.name, "split": split, "n": before["n"], "before": part(before), "after": part(after),
            "mean_tokens_change": (after.get("mean_tokens") or 0) - (before.get("mean_tokens") or 0),
            "examples": _changed_examples(before, after, tokenizer, examples)}


def _changed_examples(before: dict, after: dict, tokenizer, k: int) -> list[dict]:
    out = []
    for rb, ra in zip(before.get("records", []), after.get("records", [])):
        if len(out) >= k:
            break
        a, b = rb["completions"][0], ra["completions"][0]
        d = _first_divergence(tokenizer, a, b)
        if d is not None:
            out.append({"id": rb["id"], "reference": rb["reference"], "score_before": rb["scores"][0],
                        "score_after": ra["scores"][0], "first_divergence": d})
    return out


def audit(model, tokenizer, *, info=None, reference: str = "general", probes: str | None = "refusal", task=None,
          split: str = "test", limit: int | None = 100, max_new_tokens: int = 32, probe_tokens: int = 48,
          task_tokens: int = 256, batch_size: int = 8, engine: str = "auto", examples: int = 5,
          progress: bool = True) -> dict[str, Any]:
    """The full report for the adapter ``model`` carries (loaded from ``info``'s file, if given).

    ``reference`` and ``probes``: a shipped prompt set's name or a file (:func:`.drift.load_prompts`);
    ``probes=None`` skips them, as does a tokenizer without a chat template (a base LM does not refuse
    by design, so its rate says nothing)."""
    t0 = time.time()
    ref_prompts = load_prompts(reference)
    probe_prompts = load_prompts(probes) if probes else None
    report: dict[str, Any] = {"adapter": adapter_facts(model, info), "seconds": {}}
    ref = build_reference(model, tokenizer, ref_prompts, name=reference, max_new_tokens=max_new_tokens,
                          batch_size=batch_size, generate_batch_size=max(batch_size, 16), engine=engine,
                          progress=progress)
    d = drift(model, ref)
    report.update({k: d[k] for k in ("kl_mean", "kl_p95", "kl_max", "changed_share")})
    report["drift"] = {"reference": reference, **{k: d[k] for k in ("prompts", "tokens", "changed",
                                                                     "first_divergence", "per_prompt_kl")},
                       "max_new_tokens": max_new_tokens}
    report["seconds"]["drift"] = round(time.time() - t0, 2)
    t1 = time.time()
    if probe_prompts is not None and getattr(tokenizer, "chat_template", None):
        p = probe_refusals(model, tokenizer, probe_prompts, max_new_tokens=probe_tokens, engine=engine)
        report.update({"refusal_before": p["refusal_before"], "refusal_after": p["refusal_after"]})
        report["probes"] = {"set": probes, **p}
    else:
        report.update({"refusal_before": None, "refusal_after": None})
        report["probes"] = {"skipped": "not asked for" if probe_prompts is None else
                            "the tokenizer has no chat template (not an instruct model): refusals say nothing"}
    report["seconds"]["probes"] = round(time.time() - t1, 2)
    t2 = time.time()
    report["task"] = None
    if task is not None:
        report["task"] = task_effect(model, tokenizer, task, split=split, limit=limit, batch_size=batch_size,
                                     max_new_tokens=task_tokens, engine=engine, examples=examples, progress=progress)
        report["seconds"]["task"] = round(time.time() - t2, 2)
    report["seconds"]["total"] = round(time.time() - t0, 2)
    return report


def _pct(x: float, ci=None) -> str:
    s = f"{100 * x:.1f}%"
    return s + (f" ({100 * ci[0]:.1f}–{100 * ci[1]:.1f})" if ci else "")


def format_report(r: dict[str, Any]) -> str:
    """A short text report (a few lines; ``--json`` has everything)."""
    a, d = r["adapter"], r["drift"]
    lines = [f"adapter  {a.get('file', '(in memory)')}: {a['method']}, {a['parameters']} parameters"
             + (f", {a['payload_bytes']} bytes ({a['dtype']}), sha256 {a['file_sha256'][:12]}…" if "file_sha256" in a
                else "")
             + f"; ‖values‖ {a['values_norm']:.4g}; ‖ΔW‖/‖W‖ max {a['delta_rel_max']:.3g}, "
               f"median {a['delta_rel_median']:.3g}",
             f"drift    {d['reference']} ({d['prompts']} prompts, {d['tokens']} tokens of the base's own text): "
             f"KL(adapted‖base) mean {r['kl_mean']:.4g}, p95 {r['kl_p95']:.4g}, max {r['kl_max']:.4g} nats/token; "
             f"greedy continuation changed {d['changed']}/{d['prompts']} ({_pct(r['changed_share'])})"]
    p = r["probes"]
    if "skipped" in p:
        lines.append(f"probes   skipped: {p['skipped']}")
    else:
        lines.append(f"probes   {p['set']}: refused {_pct(p['refusal_before'], p['ci95_before'])} → "
                     f"{_pct(p['refusal_after'], p['ci95_after'])} of {p['n']}; {len(p['flipped'])} flipped, "
                     f"{p['text_changed']} completions changed")
    t = r.get("task")
    if t:
        b, f = t["before"], t["after"]
        if b.get("modes"):
            acc = " | ".join(f"{m} {_pct(b['modes'][m]['accuracy'], b['modes'][m]['ci95'])} → "
                             f"{_pct(f['modes'][m]['accuracy'], f['modes'][m]['ci95'])}" for m in b["modes"])
        else:
            acc = f"accuracy {_pct(b['accuracy'], b['ci95'])} → {_pct(f['accuracy'], f['ci95'])}"
        ln = (f"; length {b['mean_tokens']:.0f} → {f['mean_tokens']:.0f} tokens" if b.get("mean_tokens") is not None
              else "")
        lines.append(f"task     {t['name']} {t['split']} ({t['n']}): {acc}{ln}")
        for e in t["examples"]:
            fd = e["first_divergence"]
            lines.append(f"  {e['id']}: token {fd['token']} after {fd['context']!r}: base {fd['base']!r} → "
                         f"adapted {fd['adapted']!r} (score {e['score_before']:g} → {e['score_after']:g})")
    lines.append(f"took     {r['seconds']['total']:.1f} s (drift {r['seconds']['drift']:.1f} s)")
    return "\n".join(lines)
