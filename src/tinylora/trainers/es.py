"""Evolution strategies: search the adapter's few numbers directly on the task's reward.

With 13–100 trained numbers the update is a point in a space small enough to search without
gradients. Each step evaluates a population of adapter vectors on the same prompts (common random
numbers: same prompts, same sampling seeds) in one batched generation — every member is a row
group of :func:`tinylora.adapters.multi.per_row`, the base matmuls shared — and moves the mean:

- ``es.method: openai`` (Salimans et al. 2017): antithetic pairs θ ± σεᵢ, εᵢ drawn from seeds
  (stream_key(run seed, step, i)); fitness shaped to centred ranks in [−0.5, 0.5] (ties share
  their average rank); the ascent estimate g = Σᵢ (sᵢ⁺ − sᵢ⁻) εᵢ / (2Nσ) is handed to Adam (or
  SGD) at the run's lr as the gradient −g.
- ``es.method: cma``: CMA-ES (Hansen) through pycma, ``ask``/``tell`` on −fitness; its state and
  its private random generator are checkpointed (one pickle).

Fitness is the mean task reward of a member over the step's prompts: greedy by default (the
held-out metric itself, no sampling noise), or ``es.samples`` seeded samples per prompt. No backward
pass and no gradient buffers: peak memory is inference memory. Every ``es.eval_every`` steps the
current mean is scored greedily on ``es.eval_split``; with ``es.keep_best`` the run ends on the best
scored mean (the untrained start included, so a run that does not help returns the base).

Under ``torchrun`` the members are split across ranks; only fitness scalars cross (every rank
draws the same perturbations from the same seeds and takes the same step), so 2 ranks give the
adapter bytes of 1.
"""

from __future__ import annotations

import json
import math
import pickle
import time
from pathlib import Path
from typing import Any

import torch

from .._core.seeding import stream_key
from ..adapters.model import num_trainable
from ..adapters.multi import adapter_table, flat_values, per_row, set_flat_values
from ..generation.generate import Sampling, generate_texts, generate_tokens
from ..tasks.rewards import MissingDependencyError
from . import register
from .base import Trainer

# stream ids that keep ES's random numbers apart from every other stream of the run
ES_STREAM, CMA_STREAM = 0xE5, 0xC3A


def centred_ranks(f: torch.Tensor) -> torch.Tensor:
    """Ranks of ``f`` scaled to [−0.5, 0.5]; tied values share their average rank (0/1 rewards tie a lot)."""
    f = f.double().reshape(-1)
    n = f.numel()
    if n < 2:
        return torch.zeros_like(f)
    less = (f[None, :] < f[:, None]).sum(1).double()
    equal = (f[None, :] == f[:, None]).sum(1).double()
    return (less + (equal - 1) / 2) / (n - 1) - 0.5


def antithetic_gradient(shaped: torch.Tensor, eps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Ascent estimate Σᵢ (sᵢ⁺ − sᵢ⁻) εᵢ / (2Nσ) from shaped fitness ordered [+ε₀, −ε₀, +ε₁, …]."""
    N = eps.shape[0]
    diff = (shaped[0::2] - shaped[1::2]).to(eps.dtype)
    return (diff[:, None] * eps).sum(0) / (2 * N * sigma)


@register
class ESTrainer(Trainer):
    algo = "es"
    curve = "fitness_mean"
    curve_label = "mean fitness"

    def __init__(self, cfg, **kw):
        super().__init__(cfg, **kw)
        self.es = cfg.es_config()
        self.n = num_trainable(self.model)
        self.members = self.es.members(self.n)
        self.eval_examples = self.task.load(self.es.eval_split)[: self.es.eval_limit]
        if not self.eval_examples:
            raise ValueError(f"task {self.task.name!r} has no {self.es.eval_split!r} examples to select the ES mean on")
        self.best: dict[str, Any] = {"score": -math.inf, "step": -1, "values": flat_values(self.model)}
        if self.es.method == "openai":
            params = self.params
            self.opt = (torch.optim.Adam(params, lr=cfg.learning_rate()) if self.es.optimizer == "adam"
                        else torch.optim.SGD(params, lr=cfg.learning_rate()))
        else:
            self.cma = self._new_cma()

    # --- CMA-ES -----------------------------------------------------------------------------
    def _new_cma(self):
        try:
            import cma
        except ImportError as e:  # pragma: no cover - cma is a dependency
            raise MissingDependencyError("es.method=cma needs the 'cma' package (pycma): pip install cma") from e
        import numpy as np

        # pycma's own random generator (a RandomState it pickles with itself), so its draws neither
        # touch numpy's global generator nor depend on it: a checkpointed object continues exactly.
        rng = np.random.RandomState(stream_key(self.cfg.seed, CMA_STREAM) % 2**32)
        return cma.CMAEvolutionStrategy(flat_values(self.model).double().numpy(), self.es.sigma,
                                        {"popsize": self.members, "randn": rng.randn, "verbose": -9})

    def _ask(self) -> torch.Tensor:
        import numpy as np

        self._asked = self.cma.ask()
        return torch.tensor(np.stack(self._asked), dtype=torch.float32)

    # --- fitness ----------------------------------------------------------------------------
    @torch.no_grad()
    def member_rewards(self, members: torch.Tensor, examples: list, step: int) -> torch.Tensor:
        """(M, P·G) rewards of each member on each prompt (× sample), batched per row."""
        cfg, es = self.cfg, self.es
        if members.shape[0] == 0:
            return torch.zeros(0, len(examples) * max(es.samples, 1))
        G = max(es.samples, 1)
        prompts = [self.task.prompt(e, self.tokenizer) for e in examples]
        refs = [e.answer for e in examples for _ in range(G)]
        if es.samples:
            sampling = Sampling(cfg.temperature, cfg.top_p, cfg.max_new_tokens)
            seeds = [stream_key(cfg.seed, step, ES_STREAM, j, s) for j in range(len(examples)) for s in range(G)]
        else:
            sampling, seeds = Sampling(0.0, 1.0, cfg.max_new_tokens), None
        per_chunk = max(1, es.rows_per_forward // (len(prompts) * G))
        out = []
        for lo in range(0, members.shape[0], per_chunk):
            chunk = members[lo:lo + per_chunk]
            k = chunk.shape[0]
            rows = torch.arange(k).repeat_interleave(len(prompts) * G)
            with per_row(self.model, adapter_table(self.model, chunk), rows):
                g = generate_tokens(self.model, self.tokenizer, prompts * k, n=G, sampling=sampling,
                                    seeds=seeds * k if seeds else None, engine=cfg.rollout_engine)
            texts = self.tokenizer.batch_decode(g.new_ids, skip_special_tokens=True)
            out.append(torch.tensor(self.reward(texts, refs * k), dtype=torch.float64).view(k, -1))
        return torch.cat(out)

    def fitness(self, members: torch.Tensor, examples: list, step: int) -> torch.Tensor:
        """(M,) mean reward per member; each rank scores its block of members, the scalars are gathered."""
        lo, hi = self.dist.bounds(members.shape[0])
        mine = self.member_rewards(members[lo:hi], examples, step).mean(1).tolist()
        return torch.tensor([x for part in self.dist.gather(mine) for x in part], dtype=torch.float64)

    @torch.no_grad()
    def score_mean(self) -> float:
        """Greedy accuracy of the current mean on the selection split, scored as evaluation scores it."""
        cfg, task = self.cfg, self.task
        prompts = [task.prompt(e, self.tokenizer) for e in self.eval_examples]
        texts = []
        for lo in range(0, len(prompts), cfg.eval_batch_size):
            texts += [c[0] for c in generate_texts(self.model, self.tokenizer, prompts[lo:lo + cfg.eval_batch_size],
                                                   max_new_tokens=cfg.eval_max_new_tokens, engine=cfg.rollout_engine)]
        scores = [task.score(task.truncate(c), e.answer) for c, e in zip(texts, self.eval_examples)]
        return sum(scores) / len(scores)

    def select(self, step: int) -> dict[str, float]:
        score = self.score_mean()
        if score > self.best["score"]:
            self.best = {"score": score, "step": step, "values": flat_values(self.model)}
        return {"select_accuracy": score, "best_select_accuracy": self.best["score"], "best_step": self.best["step"]}

    # --- one step ---------------------------------------------------------------------------
    def train_step(self, step: int) -> dict[str, Any]:
        cfg, es = self.cfg, self.es
        t0 = time.time()
        m: dict[str, Any] = {"step": step}
        if step == 0 and es.keep_best and self.best["step"] < 0:
            m.update(self.select(0))  # the start is a candidate: ES never returns worse than it began on this split
        theta = flat_values(self.model)
        examples = [e for _, e in self.examples_for(step)]
        if es.method == "openai":
            N = self.members // 2
            eps = torch.stack([torch.randn(self.n, generator=torch.Generator().manual_seed(
                stream_key(cfg.seed, step, ES_STREAM, i) % (2**63))) for i in range(N)])
            members = torch.stack([theta + es.sigma * eps, theta - es.sigma * eps], 1).reshape(2 * N, self.n)
            f = self.fitness(members, examples, step)
            g = antithetic_gradient(centred_ranks(f), eps.double(), es.sigma).float()
            self.opt.zero_grad(set_to_none=True)
            offset = 0
            for p in self.params:
                p.grad = -g[offset:offset + p.numel()].view_as(p).to(p.dtype)
                offset += p.numel()
            for gr in self.opt.param_groups:
                gr["lr"] = self.lr_at(step)
            self.opt.step()
            sigma = es.sigma
            m["lr"] = self.lr_at(step)
        else:
            members = self._ask()
            f = self.fitness(members, examples, step)
            self.cma.tell(self._asked, (-f).tolist())
            set_flat_values(self.model, torch.tensor(self.cma.mean, dtype=torch.float32))
            sigma = float(self.cma.sigma)
        new = flat_values(self.model)
        m.update({"fitness_mean": float(f.mean()), "fitness_max": float(f.max()),
                  "fitness_std": float(f.std()) if f.numel() > 1 else 0.0, "sigma": sigma,
                  "step_norm": float((new - theta).norm()), "members": int(f.numel())})
        if es.eval_every and (step + 1) % es.eval_every == 0:
            m.update(self.select(step + 1))
        m["step_s"] = round(time.time() - t0, 3)
        m.update(self.adapter_values())
        return m

    def postfix(self, m: dict[str, Any]) -> dict[str, str]:
        out = {"fitness": f"{m['fitness_mean']:.3f}", "max": f"{m['fitness_max']:.3f}"}
        if "best_select_accuracy" in m:
            out["best"] = f"{m['best_select_accuracy']:.3f}"
        return out

    def finish(self) -> None:
        """Score the final mean (unless just scored) and, with keep_best, end on the best one."""
        if not self.es.keep_best:
            return
        if self.best["step"] != self.cfg.steps:
            self.select(self.cfg.steps)
        set_flat_values(self.model, self.best["values"])

    def summarize(self, before, after, adapter_path):
        summary = super().summarize(before, after, adapter_path)
        if self.es.keep_best:
            summary["es_kept"] = {"step": self.best["step"], "split": self.es.eval_split,
                                  "accuracy": self.best["score"], "examples": len(self.eval_examples)}
            (self.out / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary

    def report_notes(self) -> list[str]:
        if not self.es.keep_best:
            return []
        return [f"kept: the mean after step {self.best['step']} ({100 * self.best['score']:.1f}% on "
                f"{len(self.eval_examples)} {self.es.eval_split} problems, the best scored)"]

    # --- checkpoint state -------------------------------------------------------------------
    def save_extra(self, ckpt: Path) -> None:
        torch.save({"best_score": self.best["score"], "best_step": self.best["step"],
                    "best_values": self.best["values"]}, ckpt / "es_state.pt")
        if self.es.method == "cma":
            with (ckpt / "cma.pkl").open("wb") as f:
                pickle.dump({"es": self.cma}, f)

    def load_extra(self, ckpt: Path) -> None:
        state = torch.load(ckpt / "es_state.pt", weights_only=True)
        self.best = {"score": state["best_score"], "step": state["best_step"], "values": state["best_values"]}
        if self.es.method == "cma":
            with (ckpt / "cma.pkl").open("rb") as f:  # our own checkpoint, written by save_extra
                state = pickle.load(f)
            self.cma = state["es"]

