"""A serving policy: audit each adapter's off-task drift when it is loaded, refuse those above a bound.

The base's reference text (its greedy continuations of the shipped general prompts) is generated
once per server; each adapter then costs one or two teacher-forced forwards
(:func:`tinylora.audit.drift.drift`). Figures are cached by the file's SHA-256 — in memory and, with
the cache on, under ``<cache>/audit/`` keyed also by the base and the reference — so a restart or a
re-upload of the same bytes is not audited again.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path
from typing import Any

from .._core import cache
from .drift import Reference, build_reference, drift, load_prompts
from .facts import file_sha256

FIGURES = ("kl_mean", "kl_p95", "kl_max", "changed_share", "prompts", "tokens")


class DriftPolicy:
    """Refuse an adapter whose mean per-token KL(adapted ‖ base) on the reference exceeds ``max_kl``."""

    def __init__(self, max_kl: float, *, reference: str = "general", max_new_tokens: int = 32, batch_size: int = 8,
                 base_name: str = ""):
        if not (isinstance(max_kl, (int, float)) and math.isfinite(max_kl) and max_kl >= 0):
            raise ValueError(f"max_kl must be a finite number >= 0 (nats per token), got {max_kl!r}")
        self.max_kl = float(max_kl)
        self.reference_spec = reference
        self.prompts = load_prompts(reference)  # a bad set is said before the model loads
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.base_name = base_name
        self.ref: Reference | None = None
        self._memo: dict[str, dict[str, Any]] = {}

    def prepare(self, model, tokenizer) -> Reference:
        """The base's reference text (once): call with the adapter off or absent — it switches it off."""
        if self.ref is None:
            self.ref = build_reference(model, tokenizer, self.prompts, name=self.reference_spec,
                                       max_new_tokens=self.max_new_tokens,
                                       batch_size=self.batch_size)
        return self.ref

    def _disk_key(self, sha: str, model) -> str:
        dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
        ident = {"file": sha, "base": self.base_name, "dtype": dtype, "reference": self.ref.identity()}
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()

    def figures(self, model, path: str | Path) -> dict[str, Any]:
        """The drift figures of the adapter ``model`` now carries, loaded from ``path`` (cached by its hash)."""
        if self.ref is None:
            raise RuntimeError("DriftPolicy.prepare(model, tokenizer) first")
        sha = file_sha256(path)
        if sha in self._memo:
            return self._memo[sha]
        key = self._disk_key(sha, model)
        disk = cache.cache_dir() / "audit" / f"{key}.json"
        if cache.enabled() and disk.is_file():
            try:
                figs = json.loads(disk.read_text())
                if all(k in figs for k in FIGURES):
                    self._memo[sha] = figs
                    return figs
            except (OSError, json.JSONDecodeError):
                pass  # a damaged cache entry is recomputed
        t0 = time.time()
        d = drift(model, self.ref)
        figs = {**{k: d[k] for k in FIGURES}, "sha256": sha, "seconds": round(time.time() - t0, 3)}
        self._memo[sha] = figs
        if cache.enabled():
            disk.parent.mkdir(parents=True, exist_ok=True)
            tmp = disk.with_suffix(".tmp")
            tmp.write_text(json.dumps(figs))
            tmp.replace(disk)
        return figs

    def refusal(self, figs: dict[str, Any]) -> str | None:
        """Why an adapter with these figures is refused, or None."""
        if figs["kl_mean"] > self.max_kl:
            return (f"off-task drift too large: KL(adapted‖base) mean {figs['kl_mean']:.4g} nats/token on "
                    f"{figs['prompts']} reference prompts > --max-kl {self.max_kl:g} "
                    f"(p95 {figs['kl_p95']:.4g}; greedy changed on {100 * figs['changed_share']:.0f}%)")
        return None
