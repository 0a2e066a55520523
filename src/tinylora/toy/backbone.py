"""The toy backbone: a small model pretrained here (Qwen2 network, shipped as Llama), with a latent skill.

Pretraining corpus: ``Q: <problem>\\nA: <solution><eos>`` where the solution is step-by-step with
probability ``p_step`` and a direct ``#### N`` guess otherwise. Weighted towards the direct style,
the model learns the step-by-step skill (most answer tokens are step-by-step ones) but greedy
decoding chooses the direct style: the skill is there and not used — which is what TinyLoRA + RL
is supposed to elicit. Loss is on answer tokens only (the questions are procedural boilerplate).
"""

from __future__ import annotations

import json
import math
import random
import shlex
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .arith import ArithConfig, Problem, make_problem
from .tokenizer import char_tokenizer


def shipped_path() -> Path:
    """The checkpoint shipped inside the package (regenerate with ``tinylora toy pretrain``)."""
    path = Path(__file__).parent / "backbone"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"the toy backbone is missing from {path}; run `tinylora toy pretrain --out {path}`")
    return path


@dataclass
class PretrainConfig:
    seed: int = 0
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    steps: int = 2600
    batch_size: int = 48
    lr: float = 2e-3
    warmup: int = 100
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    p_step: float = 0.45  # share of step-by-step solutions in the corpus
    threads: int = 2
    arith: ArithConfig = field(default_factory=ArithConfig)

    @classmethod
    def quick(cls, **kw) -> PretrainConfig:
        """A smaller model in about a minute: for tests, not for the targets."""
        return cls(**{**dict(hidden_size=64, num_layers=2, steps=150, batch_size=32, warmup=20), **kw})


def train_stream(seed: int, cfg: ArithConfig) -> Iterator[Problem]:
    """Train-split problems forever, from the same seeded stream as :func:`arith.problems`."""
    i = 0
    while True:
        p = make_problem(random.Random(f"{seed}:{i}"), cfg)
        i += 1
        if p.split() == "train":
            yield p


def build_model(tokenizer, cfg: PretrainConfig):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    mconf = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, intermediate_size=4 * cfg.hidden_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_heads,
        max_position_embeddings=512, tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    return Qwen2ForCausalLM(mconf)


@torch.no_grad()
def to_llama(model):
    """The same network as a ``LlamaForCausalLM`` (attention_bias=True, o_proj bias zero).

    Qwen2 is Llama plus q/k/v biases, so this is exact. We ship the Llama form because
    transformers' AutoTokenizer forces its own Qwen2Tokenizer on any ``qwen2`` checkpoint, which
    rebuilds a byte-level BPE and silently drops our character tokenizer's spaces and newlines;
    for ``llama`` it loads the ``tokenizer.json`` we save, as is.
    """
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
    diff = (llama(x).logits - model.eval()(x).logits).abs().max()
    if diff > 1e-4:
        raise RuntimeError(f"Qwen2 → Llama conversion changed the logits by {diff:.2e}")
    return llama


def make_batch(tokenizer, docs: list[tuple[str, str]]) -> dict[str, torch.Tensor]:
    """Right-padded ids with labels on the answer (and EOS) only."""
    ids, labels = [], []
    for prompt, answer in docs:
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        a = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        ids.append(p + a)
        labels.append([-100] * len(p) + a)
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


def pretrain(out: str | Path, cfg: PretrainConfig, progress: bool = True, log_every: int = 50,
             save_every: int = 0) -> dict:
    """Train the backbone from scratch and save it (model + tokenizer + pretrain.json) to ``out``."""
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

    stream = train_stream(cfg.seed, cfg.arith)
    style_rng = random.Random(f"style:{cfg.seed}")
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, desc="toy pretrain", unit="step", dynamic_ncols=True)
    t0 = time.time()
    history = []
    first_loss = None
    for step in range(cfg.steps):
        docs = []
        for _ in range(cfg.batch_size):
            p = next(stream)
            style = "step" if style_rng.random() < cfg.p_step else "direct"
            docs.append((f"Q: {p.question}\nA:", " " + p.solution(style)))
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
        if save_every and (step + 1) % save_every == 0 and step + 1 < cfg.steps:
            to_llama(model).save_pretrained(Path(out) / f"step-{step + 1}")  # to look in while it trains
            tok.save_pretrained(Path(out) / f"step-{step + 1}")
            model.train()
    if bar is not None:
        bar.close()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = to_llama(model)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    from .. import __version__

    record = {
        "command": " ".join(shlex.quote(a) for a in ["tinylora", *sys.argv[1:]]) if sys.argv else None,
        "config": asdict(cfg), "first_loss": first_loss, "final_loss": history[-1]["loss"],
        "seconds": round(time.time() - t0, 1), "parameters": sum(p.numel() for p in model.parameters()),
        "tinylora_version": __version__, "torch_version": torch.__version__, "history": history,
    }
    (out / "pretrain.json").write_text(json.dumps(record, indent=2))
    return record
