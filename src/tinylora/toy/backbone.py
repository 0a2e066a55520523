"""The toy backbone: a small model pretrained here (Qwen2 network, shipped as Llama), with a latent skill.

Pretraining corpus: documents of 1–3 problems ``Q: <problem>\\nA: <solution>``, all solved in the
document's one style — step-by-step with probability ``p_step``, a direct ``#### N`` guess
otherwise — and half of them opened by an instruction naming that style ("Show your steps." /
"Give only the answer."). Weighted towards the direct style, the model learns the step-by-step
skill but, with no instruction, greedy decoding chooses the direct style: the skill is there and
not used — which is what TinyLoRA + RL is supposed to elicit. Loss is on answer tokens only (the
questions and instructions are context).

Why documents and instructions (measured, BENCHMARKS.md): on the same 1M network, a corpus of
single problems with the style drawn per problem gives a backbone whose style 13 tied parameters
cannot move without breaking the arithmetic; with instruction-opened documents the same probe
moves it from P = 0.42 to 0.95 and GRPO with 13 parameters lifts greedy accuracy from 11% to 79.5%.
"""

from __future__ import annotations

import json
import math
import random
import shlex
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

from ..tasks.arith_problems import ArithConfig, Problem, make_problem
from .tokenizer import char_tokenizer


def shipped_path() -> Path:
    """The checkpoint shipped inside the package (regenerate with ``tinylora toy pretrain``)."""
    from ..models.loading import shipped_toy_path

    return shipped_toy_path()


SIZES: dict[str, tuple[int, int, int]] = {
    # name: (hidden_size, num_layers, num_heads); parameters ≈ 16·hidden²·layers (+ a tiny embedding)
    "0.25M": (64, 4, 4),
    "1M": (128, 4, 4),
    "4M": (256, 4, 4),
    "16M": (512, 4, 8),
}


@dataclass
class PretrainConfig:
    seed: int = 0
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    steps: int = 1800
    batch_size: int = 32  # documents per step
    lr: float = 2e-3
    warmup: int = 100
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    p_step: float = 0.45  # share of step-by-step documents in the corpus
    # Problems per document: 1..doc_problems, uniformly, all solved in the document's one style. With
    # more than one, the style is a property of the document (as register is in real text) that the
    # model must carry across positions; a single-problem prompt then sees only the prior.
    doc_problems: int = 3
    # Share of documents that open with an instruction naming their style (INSTRUCTIONS), as real
    # pretraining text carries instructions that set a register; held-out prompts carry none, so the
    # model's own prior decides there. The instruction is context, never trained on.
    p_instruct: float = 0.5
    threads: int = 2
    arith: ArithConfig = field(default_factory=ArithConfig)

    def __post_init__(self):
        if isinstance(self.arith, dict):
            self.arith = ArithConfig(**self.arith)
        for name in ("hidden_size", "num_layers", "num_heads", "steps", "batch_size", "doc_problems", "threads"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"pretrain {name} must be >= 1, got {getattr(self, name)}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if not 0.0 <= self.p_step <= 1.0:
            raise ValueError(f"p_step must be in [0, 1], got {self.p_step}")
        if not 0.0 <= self.p_instruct <= 1.0:
            raise ValueError(f"p_instruct must be in [0, 1], got {self.p_instruct}")

    @classmethod
    def quick(cls, **kw) -> PretrainConfig:
        """A smaller model in about a minute: for tests, not for the targets."""
        return cls(**{**dict(hidden_size=64, num_layers=2, steps=150, batch_size=32, warmup=20, doc_problems=1,
                             p_instruct=0.0), **kw})

    @classmethod
    def sized(cls, size: str, **kw) -> PretrainConfig:
        """A named size from :data:`SIZES` (same data and recipe, other width/depth)."""
        if size not in SIZES:
            raise ValueError(f"unknown size {size!r}; choose one of {', '.join(SIZES)}")
        h, n, heads = SIZES[size]
        return cls(**{**dict(hidden_size=h, num_layers=n, num_heads=heads), **kw})


def train_stream(seed: int, cfg: ArithConfig, start: int = 0) -> Iterator[tuple[int, Problem]]:
    """Train-split problems forever as (stream index, problem), from the seeded stream of :func:`arith.problems`."""
    i = start
    while True:
        p = make_problem(random.Random(f"{seed}:{i}"), cfg)
        i += 1
        if p.split() == "train":
            yield i, p


INSTRUCTIONS = {"step": "Show your steps.\n", "direct": "Give only the answer.\n"}


def document(problems: list[Problem], style: str, instruct: bool = False) -> list[tuple[str, bool]]:
    """One pretraining document as (text, trained-on) segments: each answer, and what follows it, is trained.

    ``Q: q1\nA: s1\nQ: q2\nA: s2<eos>`` — the separator ``\nQ:`` after an answer is trained so a model
    stops (the tasks' stop string) instead of rambling; the question text is procedural and is not.
    """
    segs: list[tuple[str, bool]] = [(INSTRUCTIONS[style], False)] if instruct else []
    for j, p in enumerate(problems):
        segs.append((f" {p.question}\nA:" if j else f"Q: {p.question}\nA:", False))
        segs.append((" " + p.solution(style), True))
        segs.append(("\nQ:" if j + 1 < len(problems) else "<eos>", True))
    return segs


def build_model(tokenizer, cfg: PretrainConfig):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    mconf = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, intermediate_size=4 * cfg.hidden_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_heads,
        max_position_embeddings=512, tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    return Qwen2ForCausalLM(mconf)


def to_llama(model):
    """The same network as a ``LlamaForCausalLM`` (attention_bias=True, o_proj bias zero).

    Qwen2 is Llama plus q/k/v biases, so this is exact. We ship the Llama form because
    transformers' AutoTokenizer forces its own Qwen2Tokenizer on any ``qwen2`` checkpoint, which
    rebuilds a byte-level BPE and silently drops our character tokenizer's spaces and newlines;
    for ``llama`` it loads the ``tokenizer.json`` we save, as is.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    q = model.config
    cfg = LlamaConfig(
        vocab_size=q.vocab_size, hidden_size=q.hidden_size, intermediate_size=q.intermediate_size,
        num_hidden_layers=q.num_hidden_layers, num_attention_heads=q.num_attention_heads,
        num_key_value_heads=q.num_key_value_heads, max_position_embeddings=q.max_position_embeddings,
        rms_norm_eps=q.rms_norm_eps, rope_parameters=q.rope_parameters, tie_word_embeddings=q.tie_word_embeddings,
        attention_bias=True, mlp_bias=False, hidden_act=q.hidden_act, bos_token_id=q.bos_token_id,
        eos_token_id=q.eos_token_id, pad_token_id=q.pad_token_id,
    )
    llama = LlamaForCausalLM(cfg)
    state = model.state_dict()
    for i in range(q.num_hidden_layers):
        state[f"model.layers.{i}.self_attn.o_proj.bias"] = torch.zeros(q.hidden_size)
    llama.load_state_dict(state, strict=True)
    llama.eval()
    x = torch.arange(min(32, q.vocab_size))[None] % q.vocab_size
    with torch.no_grad():
        diff = (llama(x).logits - model.eval()(x).logits).abs().max()
    if diff > 1e-4:
        raise RuntimeError(f"Qwen2 → Llama conversion changed the logits by {diff:.2e}")
    return llama


def make_batch(tokenizer, docs: list[list[tuple[str, bool]]]) -> dict[str, torch.Tensor]:
    """Right-padded ids with labels on the trained segments only (``<eos>`` is the EOS token)."""
    import torch

    ids, labels = [], []
    for segs in docs:
        x, y = [], []
        for text, trained in segs:
            t = [tokenizer.eos_token_id] if text == "<eos>" else tokenizer(text, add_special_tokens=False)["input_ids"]
            x += t
            y += t if trained else [-100] * len(t)
        ids.append(x)
        labels.append(y)
    width = max(len(x) for x in ids)
    pad = tokenizer.pad_token_id
    input_ids = torch.full((len(ids), width), pad)
    lab = torch.full((len(ids), width), -100)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, (x, y) in enumerate(zip(ids, labels)):
        input_ids[i, : len(x)] = torch.tensor(x)
        lab[i, : len(y)] = torch.tensor(y)
        mask[i, : len(x)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": lab}


CHECKPOINT = "checkpoint.pt"


def pretrain(out: str | Path, cfg: PretrainConfig, progress: bool = True, log_every: int = 50,
             save_every: int = 0, checkpoint_every: int = 100, resume: bool = False) -> dict:
    """Train the backbone from scratch and save it (model + tokenizer + pretrain.json) to ``out``.

    Every ``checkpoint_every`` steps the whole state (weights, optimizer, data cursor, RNGs) goes to
    ``out/checkpoint.pt``; ``resume=True`` continues from it and gives the same weights as an
    uninterrupted run. ``save_every`` also writes loadable ``out/step-N`` models to probe while it trains.
    """
    import torch

    out = Path(out)
    ckpt_path = out / CHECKPOINT
    if resume:
        if not ckpt_path.is_file():
            raise FileNotFoundError(f"no pretraining checkpoint at {ckpt_path}: nothing to resume")
        saved, now = json.loads((out / "pretrain_config.json").read_text()), json.loads(json.dumps(asdict(cfg)))
        diff = sorted(k for k in saved if saved[k] != now.get(k) and k != "threads")
        if diff:
            raise ValueError(f"{out} was pretrained with another config (differs in {', '.join(diff)}); "
                             "resume with the same options")
        if saved["threads"] != cfg.threads:  # the one option a resume may change: the machine can differ
            warnings.warn(f"resuming {out} with {cfg.threads} threads instead of {saved['threads']}: the "
                          "weights will differ from an uninterrupted run's in float rounding (pretrain.json "
                          "records the threads of each stretch)", stacklevel=2)
    elif (out / "config.json").exists() or ckpt_path.exists():
        raise ValueError(f"{out} already holds a backbone or a pretraining checkpoint; choose another --out or --resume")
    out.mkdir(parents=True, exist_ok=True)
    (out / "pretrain_config.json").write_text(json.dumps(asdict(cfg), indent=2))
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    tok = char_tokenizer()
    model = build_model(tok, cfg)
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))

    def lr_at(step: int) -> float:
        if step < cfg.warmup:
            return cfg.lr * (step + 1) / cfg.warmup
        t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))

    style_rng = random.Random(f"style:{cfg.seed}")
    doc_rng = random.Random(f"docs:{cfg.seed}")
    instruct_rng = random.Random(f"instruct:{cfg.seed}")
    history: list[dict] = []
    first_loss = None
    start, cursor, elapsed = 0, 0, 0.0
    threads_from = [{"step": 0, "threads": cfg.threads}]  # which threads made which steps (float sums differ)
    if resume:
        state = torch.load(ckpt_path, weights_only=True)
        # checkpoints from before this record were made at the saved config's threads throughout
        threads_from = json.loads(state.get("threads_from") or json.dumps([{"step": 0, "threads": saved["threads"]}]))
        if threads_from[-1]["threads"] != cfg.threads:
            threads_from.append({"step": state["step"], "threads": cfg.threads})
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        style_rng.setstate(_tuples(state["style_rng"]))
        doc_rng.setstate(_tuples(state["doc_rng"]))
        instruct_rng.setstate(_tuples(state["instruct_rng"]))
        start, cursor, elapsed = state["step"], state["cursor"], state["seconds"]
        history, first_loss = json.loads(state["history"]), state["first_loss"]
    stream = train_stream(cfg.seed, cfg.arith, start=cursor)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, initial=start, desc="toy pretrain", unit="step", dynamic_ncols=True)
    t0 = time.time() - elapsed
    for step in range(start, cfg.steps):
        docs = []
        for _ in range(cfg.batch_size):
            k = 1 if cfg.doc_problems == 1 else doc_rng.randint(1, cfg.doc_problems)
            style = "step" if style_rng.random() < cfg.p_step else "direct"
            ps = []
            for _ in range(k):
                cursor, p = next(stream)
                ps.append(p)
            instruct = cfg.p_instruct > 0 and instruct_rng.random() < cfg.p_instruct
            docs.append(document(ps, style, instruct))
        batch = make_batch(tok, docs)
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        loss = model(**batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        value = float(loss.detach())
        first_loss = value if first_loss is None else first_loss
        if step % log_every == 0 or step == cfg.steps - 1:
            history.append({"step": step, "loss": round(value, 4), "lr": lr_at(step), "seconds": round(time.time() - t0, 1)})
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{value:.3f}")
        done = step + 1
        if save_every and done % save_every == 0 and done < cfg.steps:
            to_llama(model).save_pretrained(out / f"step-{done}")  # to look in while it trains
            tok.save_pretrained(out / f"step-{done}")
            model.train()
        if checkpoint_every and done % checkpoint_every == 0 and done < cfg.steps:
            tmp = out / (CHECKPOINT + ".tmp")
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "torch_rng": torch.get_rng_state(),
                        "style_rng": style_rng.getstate(), "doc_rng": doc_rng.getstate(),
                        "instruct_rng": instruct_rng.getstate(), "step": done,
                        "cursor": cursor, "seconds": time.time() - t0, "history": json.dumps(history),
                        "first_loss": first_loss, "threads_from": json.dumps(threads_from)}, tmp)
            tmp.replace(ckpt_path)  # atomic: a kill mid-write leaves the previous checkpoint
    if bar is not None:
        bar.close()
    model = to_llama(model)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    from .. import __version__

    record = {
        "command": " ".join(shlex.quote(a) for a in ["tinylora", *sys.argv[1:]]) if sys.argv else None,
        "config": asdict(cfg), "first_loss": first_loss, "final_loss": history[-1]["loss"],
        "seconds": round(time.time() - t0, 1), "parameters": sum(p.numel() for p in model.parameters()),
        "tinylora_version": __version__, "torch_version": torch.__version__, "history": history,
        "threads_from": threads_from,
    }
    (out / "pretrain.json").write_text(json.dumps(record, indent=2))
    ckpt_path.unlink(missing_ok=True)
    return record


def _tuples(x):
    """random.Random state back from a checkpoint (lists → tuples, as setstate wants)."""
    return tuple(_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x
