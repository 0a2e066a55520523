"""What every trainer shares: model + adapter, optimizer and schedule, the data order, checkpoints and
resume, evaluation before and after, the loop, its metrics and its report.

An algorithm is a subclass in its own module of this package (``grpo``, ``sft``, ``es``) that
defines ``train_step(step) -> metrics`` and registers itself under its ``algo`` name
(:func:`tinylora.trainers.register`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import torch

from .. import tasks as tasks_mod
from .._core import distributed
from .._core.seeding import stream_key
from ..adapters.file import load as load_adapter
from ..adapters.file import save as save_adapter
from ..adapters.model import attach, get_root, trainable_parameters, update_bytes
from ..evaluation import evaluate, versions
from ..generation.rollout import LocalBackend, Rollout, RolloutBackend, Sampling
from .config import TrainConfig
from .curves import sparkline, write_curves_png
from .reporting import Reporters
from .reporting import check_available as check_reporters
from .run_dir import check_run_dir, resumed_config  # noqa: F401  (re-exported: the trainer checks before it writes)


class Trainer:
    """What every algorithm shares: model + adapter, optimizer and schedule, the data order,
    checkpoints and resume, evaluation before/after, the loop and its report. Subclasses define
    ``train_step(step) -> metrics`` and which metric is the run's curve (``curve``)."""

    algo = ""
    curve = "loss"  # the metric summarised first fifth → last fifth in the report
    curve_label = "loss"

    def __init__(self, cfg: TrainConfig, *, model=None, tokenizer=None, task=None,
                 backend: RolloutBackend | None = None, progress: bool = True,
                 dist: distributed.Dist | None = None):
        from ..models.loading import load_model, load_tokenizer

        if cfg.algo != self.algo:
            raise ValueError(f"{type(self).__name__} runs algo={self.algo!r}, the config says {cfg.algo!r}")
        self.cfg = cfg
        from .._core.memory import keep_freed_memory

        self.allocator = keep_freed_memory()  # a real model's large temporaries reuse pages (_core/memory.py)
        # under torchrun: this rank's place in the job (one rank otherwise)
        self.dist = dist if dist is not None else distributed.init(cfg.device, cfg.dist_timeout_s)
        self.progress = progress and self.dist.is_main
        torch.manual_seed(cfg.seed)
        self.task = task if task is not None else tasks_mod.get(cfg.task, **cfg.task_args)  # before the slow load
        if self.dist.is_main:
            check_reporters(cfg.report_to)  # a logger whose package is missing: one line, before the load
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(cfg.model)  # first: fails fast
        from .._core.dtypes import resolve_dtype

        # dtype: auto → bf16 where this machine has it and it measures faster, else fp32 (recorded)
        self.dtype, self.dtype_why = resolve_dtype(cfg.dtype, str(self.dist.device))
        if cfg.dtype == "auto" and self.dist.is_main:
            print(f"tinylora train: dtype auto → {self.dtype} ({self.dtype_why})", flush=True)
        self.model = (model if model is not None
                      else load_model(cfg.model, dtype=self.dtype, device=str(self.dist.device)))
        self.reward = tasks_mod.TaskReward(self.task)
        attach(self.model, cfg.adapter_config())
        self.params = trainable_parameters(self.model)
        self.opt = torch.optim.AdamW(self.params, lr=cfg.learning_rate(), weight_decay=cfg.weight_decay)
        self.backend = (backend if backend is not None
                        else LocalBackend(self.model, self.tokenizer, engine=cfg.rollout_engine))
        self.train_examples = self.task.load("train")
        if not self.train_examples:
            raise ValueError(f"task {self.task.name!r} has no training examples")
        self.out = Path(cfg.out_dir)
        self.step = 0
        self._stop = False

    # --- schedule and data ----------------------------------------------------------------
    def lr_at(self, step: int) -> float:
        base = self.cfg.learning_rate()
        if step < self.cfg.warmup_steps:
            return base * (step + 1) / self.cfg.warmup_steps
        if self.cfg.schedule == "cosine":
            t = (step - self.cfg.warmup_steps) / max(1, self.cfg.steps - self.cfg.warmup_steps)
            return base * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))
        return base

    def autocast(self):
        """bf16 autocast on CUDA (``autocast: auto``) — the adapter and optimizer stay fp32; fp32 on CPU."""
        dev = next(self.model.parameters()).device
        on = self.cfg.autocast == "bf16" or (self.cfg.autocast == "auto" and dev.type == "cuda")
        return torch.autocast(dev.type, dtype=torch.bfloat16) if on else contextlib.nullcontext()

    def my_examples(self, step: int) -> list[tuple[int, Any]]:
        """This rank's share of the step's prompts (all of them in one process)."""
        return self.dist.shard(self.examples_for(step))

    def examples_for(self, step: int) -> list[tuple[int, Any]]:
        """(global index, example) for this step: a seeded permutation per epoch; a pure function of step."""
        n, B = len(self.train_examples), self.cfg.prompts_per_step
        out = []
        for j in range(step * B, (step + 1) * B):
            epoch, pos = divmod(j, n)
            out.append((j, self.train_examples[int(self._permutation(epoch)[pos])]))
        return out

    def _permutation(self, epoch: int) -> torch.Tensor:
        if getattr(self, "_perm_epoch", None) != epoch:  # one shuffle per epoch, not per prompt
            g = torch.Generator().manual_seed(stream_key(self.cfg.seed, epoch) % (2**63))
            self._perm, self._perm_epoch = torch.randperm(len(self.train_examples), generator=g), epoch
        return self._perm

    # --- one step (the algorithm) ----------------------------------------------------------
    def rollout(self, step: int) -> tuple[list, Rollout]:
        """This rank's prompts of ``step`` and group_size samples of each, sample s of prompt j drawn
        from the stream (seed, step, j, s): what GRPO learns from and rejection SFT filters."""
        cfg = self.cfg
        chosen = self.my_examples(step)
        if not chosen:  # more ranks than prompts: this rank sits the step out (but joins every collective)
            return chosen, Rollout([], [], [], [])
        prompts = [self.task.prompt(e, self.tokenizer) for _, e in chosen]
        seeds = [stream_key(cfg.seed, step, j, s) for j, _ in chosen for s in range(cfg.group_size)]
        sampling = Sampling(cfg.temperature, cfg.top_p, cfg.max_new_tokens)
        return chosen, self.backend.generate(prompts, cfg.group_size, sampling, seeds)

    def train_step(self, step: int) -> dict[str, Any]:
        raise NotImplementedError

    def optimizer_step(self, step: int) -> float:
        """Sum the gradient over ranks, clip, set this step's learning rate, step AdamW; returns the
        pre-clip gradient norm (identical on every rank, so every rank takes the same step)."""
        for p in self.params:  # a rank (or step) without samples to learn from contributes zeros
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        self.dist.sum_grads(self.params)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip))
        for gr in self.opt.param_groups:
            gr["lr"] = self.lr_at(step)
        self.opt.step()
        return grad_norm

    def postfix(self, m: dict[str, Any]) -> dict[str, str]:
        return {"loss": f"{m['loss']:.4f}"}

    def adapter_values(self) -> dict[str, Any]:
        if sum(p.numel() for p in self.params) <= 64:
            return {"adapter": [round(x, 6) for p in self.params for x in p.detach().flatten().tolist()]}
        return {}

    # --- checkpoints ----------------------------------------------------------------------
    def save_checkpoint(self, step_done: int) -> Path:
        """Atomically: write ckpt-N.tmp, rename to ckpt-N, then point ``latest`` at it (rank 0 writes;
        every rank waits for it, so a resume never sees a half-written checkpoint)."""
        final = self.out / f"ckpt-{step_done}"
        if not self.dist.is_main:
            self.dist.barrier()
            return final
        tmp = self.out / f"ckpt-{step_done}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_adapter(self.model, tmp / "adapter.safetensors", dtype="fp32")
        torch.save({"optimizer": self.opt.state_dict(), "step": step_done, "torch_rng": torch.get_rng_state()},
                   tmp / "trainer_state.pt")
        self.save_extra(tmp)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        latest_tmp = self.out / "latest.tmp"
        latest_tmp.write_text(final.name)
        os.replace(latest_tmp, self.out / "latest")
        for old in self.out.glob("ckpt-*"):
            if old != final and old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
        self.dist.barrier()
        return final

    def resume(self) -> int:
        latest = self.out / "latest"
        if not latest.exists():
            raise FileNotFoundError(f"{self.out} has no checkpoint to resume from (no 'latest' file)")
        ckpt = self.out / latest.read_text().strip()
        state = torch.load(ckpt / "trainer_state.pt", weights_only=True)
        load_adapter(self.model, ckpt / "adapter.safetensors")  # verifies config, modules and base
        self.opt.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        self.step = int(state["step"])
        self.load_extra(ckpt)
        for log in (self.out / "metrics.jsonl", self.out / "completions.jsonl"):
            if log.exists() and self.dist.is_main:  # drop lines logged after the checkpoint: they will be redone
                keep = [ln for ln in log.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] < self.step]
                log.write_text("".join(ln + "\n" for ln in keep))
        return self.step

    def save_extra(self, ckpt: Path) -> None:
        """Algorithm state beyond the adapter, optimizer and RNG (rank 0, into the checkpoint folder)."""

    def load_extra(self, ckpt: Path) -> None:
        """Read back what :meth:`save_extra` wrote."""

    def finish(self) -> None:
        """After the last step, before the adapter is saved (e.g. ES picks its best validated mean)."""

    # --- the run --------------------------------------------------------------------------
    def evaluate(self, name: str, split: str | None = None) -> dict:
        cfg = self.cfg
        with self.autocast():
            return evaluate(self.model, self.tokenizer, self.task, split=split or cfg.eval_split,
                            limit=cfg.eval_limit, batch_size=cfg.eval_batch_size, max_new_tokens=cfg.eval_max_new_tokens,
                            seed=cfg.seed, out_dir=self.out / name, progress=self.progress, model_name=cfg.model,
                            dist=self.dist, engine=cfg.rollout_engine)

    def log(self, name: str, records: list[dict[str, Any]]) -> None:
        """Append JSON lines to a run file (rank 0 only)."""
        if self.dist.is_main and records:
            self.out.mkdir(parents=True, exist_ok=True)
            with (self.out / name).open("a") as f:
                f.write("".join(json.dumps(r) + "\n" for r in records))

    def train(self, resume: bool = False) -> dict[str, Any]:
        cfg = self.cfg
        check_run_dir(self.out, resume)
        self.out.mkdir(parents=True, exist_ok=True)
        self.dist.barrier()  # every rank has looked before rank 0 writes anything
        if resume:
            self.resume()
            if self.step < cfg.steps and self.dist.is_main:  # training goes on: an earlier final eval is stale
                shutil.rmtree(self.out / "eval_after", ignore_errors=True)
        if self.dist.is_main:
            (self.out / "config.yaml").write_text(cfg.to_yaml())
            (self.out / "versions.json").write_text(json.dumps(versions(), indent=2))
            self.record_resolved(resume)
        before = self.evaluate("eval_before") if cfg.eval_before else None
        reporters = Reporters(cfg.report_to, self.out, cfg.to_dict(), resume_step=self.step) if self.dist.is_main \
            else None
        if reporters is not None and not reporters.active:  # jsonl alone: nothing more to compute per step
            reporters = None

        def on_stop_signal(signum, frame):  # Ctrl-C, or SIGTERM (torchrun stopping, a scheduler preempting)
            self._stop = True

        stop_signals = (signal.SIGINT, signal.SIGTERM)
        old_handlers = {sig: signal.signal(sig, on_stop_signal) for sig in stop_signals} if _main_thread() else {}
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=cfg.steps, initial=self.step, desc=self.algo, unit="step", dynamic_ncols=True)
        history = []
        try:
            while self.step < cfg.steps:
                with self.autocast():
                    m = self.train_step(self.step)
                    if self.dist.is_main:  # only rank 0 logs metrics
                        m.update(self.task.diagnostics(self.model, self.tokenizer))
                history.append(m)
                self.log("metrics.jsonl", [m])
                if reporters is not None:
                    reporters.step(self.step, m, self.adapter_norm())
                self.step += 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(self.postfix(m))
                if self.dist.active:  # stop together: one rank's Ctrl-C stops every rank at the same step
                    self._stop = self.dist.sum([float(self._stop)])[0] > 0
                if self._stop:
                    path = self.save_checkpoint(self.step)
                    if self.dist.is_main:
                        print(f"\ninterrupted: checkpoint saved to {path}; continue with --resume {self.out}")
                    raise KeyboardInterrupt
                if cfg.checkpoint_every and (self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps):
                    self.save_checkpoint(self.step)  # the last step too: a finished run can be extended
        except BaseException:
            if reporters is not None:
                reporters.close()
            raise
        finally:
            if bar is not None:
                bar.close()
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)
        self.finish()
        adapter_path = self.out / "adapter.safetensors"
        if self.dist.is_main:
            save_adapter(self.model, adapter_path, dtype=cfg.save_dtype)
        after = self.evaluate("eval_after")
        summary = self.summarize(before, after, adapter_path) if self.dist.is_main else None
        if reporters is not None:
            reporters.finish({"eval_before": before, "eval_after": after}, summary.get("curves_path"), cfg.steps)
        return self.dist.broadcast(summary)

    def adapter_norm(self) -> float:
        """‖v‖ (all trained numbers together): how far the adapter has moved from zero."""
        return float(torch.sqrt(sum((p.detach().double() ** 2).sum() for p in self.params)))

    def resolved(self) -> dict[str, Any]:
        """What the config's automatic values became in this process (``lr: null``, ``device: auto`` …)."""
        from ..generation.generate import resolve_engine

        cfg = self.cfg
        dev = next(self.model.parameters()).device
        autocast = cfg.autocast == "bf16" or (cfg.autocast == "auto" and dev.type == "cuda")
        return {"lr": cfg.learning_rate(), "device": str(dev), "dtype": self.dtype, "dtype_why": self.dtype_why,
                "rollout_engine": resolve_engine(self.model, cfg.rollout_engine),
                "autocast": "bf16" if autocast else "off", "world_size": self.dist.world}

    def record_resolved(self, resume: bool) -> None:
        """``resolved.json``: the requested and the resolved values, and one entry per stretch of the run
        (its first step, its steps, threads, CPU features and versions), so a resume is on the record."""
        from .._core.threads import cpu_features

        path = self.out / "resolved.json"
        old = json.loads(path.read_text()) if resume and path.is_file() else {}
        cfg = self.cfg
        stretch = {"from_step": self.step, "steps": cfg.steps, "threads": torch.get_num_threads(),
                   "cpu": cpu_features(), "allocator": self.allocator, "versions": versions(),
                   "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        record = {"requested": {k: getattr(cfg, k) for k in ("lr", "device", "dtype", "rollout_engine", "autocast")},
                  "resolved": self.resolved(), "stretches": [*old.get("stretches", []), stretch]}
        path.write_text(json.dumps(record, indent=2))

    def summarize(self, before: dict | None, after: dict, adapter_path: Path) -> dict[str, Any]:
        cfg = self.cfg
        all_metrics = [json.loads(ln) for ln in (self.out / "metrics.jsonl").read_text().splitlines() if ln.strip()]
        head = all_metrics[: max(1, len(all_metrics) // 5)]
        tail = all_metrics[-max(1, len(all_metrics) // 5):]
        summary = {
            "accuracy_before": before["accuracy"] if before else None,
            "accuracy_after": after["accuracy"], "ci95_after": after["ci95"],
            "curve": self.curve, "curve_first": sum(m[self.curve] for m in head) / len(head),
            "curve_last": sum(m[self.curve] for m in tail) / len(tail), "algo": self.algo,
            "trainable_parameters": sum(p.numel() for p in self.params),
            "adapter_bytes": update_bytes(self.model, cfg.save_dtype), "adapter_path": str(adapter_path),
            "values": [x for p in self.params for x in p.detach().flatten().tolist()][:64],
            "method": get_root(self.model).config.method, "steps": cfg.steps, "world_size": self.dist.world,
        }
        labels = {self.curve: self.curve_label, "accuracy": "batch accuracy", **self.task.curves}
        series = {k: [m[k] for m in all_metrics if k in m] for k in labels}
        if series["accuracy"] == series[self.curve]:  # a 0/1 reward: its mean is the batch accuracy
            del series["accuracy"]
        summary["sparklines"] = {k: sparkline(v) for k, v in series.items() if v}
        summary["labels"] = labels
        summary["notes"] = self.report_notes()
        evals = {0: before["accuracy"]} if before else {}
        evals[cfg.steps] = after["accuracy"]
        summary["curves_path"] = str(write_curves_png(
            all_metrics, self.out / "curves.png", evals, extra_panels=self.task.curves,
            title=f"{self.algo} · {summary['method']} · {summary['trainable_parameters']} parameters"))
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary

    def report_notes(self) -> list[str]:
        """Lines an algorithm adds to the run's report (ES: which mean it kept); none by default."""
        return []


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def format_report(s: dict[str, Any]) -> str:
    lines = []
    if s["accuracy_before"] is not None:
        lines.append(f"accuracy: {100 * s['accuracy_before']:.1f}% → {100 * s['accuracy_after']:.1f}% "
                     f"({100 * (s['accuracy_after'] - s['accuracy_before']):+.1f} points; after: 95% CI "
                     f"{100 * s['ci95_after'][0]:.1f}–{100 * s['ci95_after'][1]:.1f}%)")
    else:
        lines.append(f"accuracy after: {100 * s['accuracy_after']:.1f}%")
    lines.append(f"{s['curve'].replace('_mean', '')}: {s['curve_first']:.3f} (first fifth of steps) → "
                 f"{s['curve_last']:.3f} (last fifth)")
    for key, line in s.get("sparklines", {}).items():
        name = s.get("labels", {}).get(key, key)
        lines.append(f"{name + ' per step:':<26}{line}")
    lines += s.get("notes", [])
    if s.get("curves_path"):
        lines.append(f"curves: {s['curves_path']}")
    lines.append(f"{s['method']}: {s['trainable_parameters']} trained parameters, {s['adapter_bytes']} bytes "
                 f"→ {s['adapter_path']}")
    if s["trainable_parameters"] <= 64:
        lines.append("values: " + ", ".join(f"{v:+.5f}" for v in s["values"]))
    return "\n".join(lines)
