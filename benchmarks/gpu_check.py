"""GPU check (where a GPU is lent; never part of the test suite): 2 GRPO steps on a Qwen2.5-0.5B-shaped
model with random weights, saved locally first (no hub). Fits in five minutes on one H200.

    python benchmarks/gpu_check.py                   # CUDA, bf16 base, 64 prompts × 4 samples, ≤256 tokens
    python benchmarks/gpu_check.py --tiny --device cpu   # the same path on a tiny shape (a smoke test here)

Prints (and writes to --out, default $OUT or .) one JSON record: attach time (the SVDs), rollout
tokens/s, step time, peak GPU memory, and whether the base weights came back bit for bit. A random
model's rewards are all 0, so GRPO's loss is skipped; ``--check-grad`` adds one SFT step so the
backward pass and the optimizer run on the device too. ``engines`` compares the three decode loops
on one rollout (16 prompts × 4 samples, T = 1, ``--engine-tokens`` new tokens): tokens/s of HF
``generate``, ours (compacting) and ours with static shapes (a CUDA graph on CUDA; the second call
is timed, after the capture), and whether all three gave the same tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

QWEN25_05B = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                  num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768, rope_theta=1e6,
                  tie_word_embeddings=True, rms_norm_eps=1e-6)
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            vocab_size=151936, max_position_embeddings=4096, tie_word_embeddings=True)


def build(path: Path, shape: dict, dtype) -> None:
    """Random weights in the real architecture, with the toy character tokenizer (its ids < the vocab)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from tinylora.toy.tokenizer import char_tokenizer

    tok = char_tokenizer()
    torch.manual_seed(0)
    cfg = Qwen2Config(**shape, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      bos_token_id=tok.bos_token_id)
    model = Qwen2ForCausalLM(cfg).to(dtype)
    model.save_pretrained(path)
    tok.save_pretrained(path)


def compare_engines(tr, max_new: int, cuda: bool) -> dict:
    """One rollout through each decode loop: tokens/s and whether the tokens agree."""
    import torch

    from tinylora.generation.generate import Sampling, generate_tokens

    prompts = [tr.task.prompt(e, tr.tokenizer) for e in tr.train_examples[:16]]
    seeds = list(range(len(prompts) * 4))
    sampling = Sampling(1.0, 1.0, max_new)
    out, ref = {}, None
    for engine in ("hf", "tinylora", "static"):
        for _ in range(2):  # the first call warms up (and captures the CUDA graph for static)
            if cuda:
                torch.cuda.synchronize()
            t = time.time()
            with tr.autocast():
                g = generate_tokens(tr.model, tr.tokenizer, prompts, n=4, sampling=sampling, seeds=seeds, engine=engine)
            if cuda:
                torch.cuda.synchronize()
            dt = time.time() - t
        ref = g.new_ids if ref is None else ref
        same = g.new_ids.shape == ref.shape and bool(torch.equal(g.new_ids.cpu(), ref.cpu()))
        out[engine] = {"seconds": round(dt, 3), "tokens_per_s": round(g.new_ids.numel() / dt, 1), "same_as_hf": same}
    return out


def main() -> None:
    import torch

    from tinylora.trainers.config import TrainConfig
    from tinylora.trainers import make_trainer

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true", help="a tiny shape (CPU smoke test of this script)")
    p.add_argument("--prompts", type=int, default=64)
    p.add_argument("--group", type=int, default=4)
    p.add_argument("--max-new", type=int, default=256)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--check-grad", action="store_true", help="also one SFT step (backward + optimizer on device)")
    p.add_argument("--engine-tokens", type=int, default=64, help="new tokens in the engine comparison (0: skip it)")
    p.add_argument("--out", default=os.environ.get("OUT", "."))
    a = p.parse_args()
    cuda = a.device.startswith("cuda")
    dtype = "bf16" if cuda else "fp32"
    rec: dict = {"device": a.device, "shape": "tiny" if a.tiny else "qwen2.5-0.5b", "base_dtype": dtype,
                 "torch": torch.__version__}
    if cuda:
        rec["gpu"] = torch.cuda.get_device_name(0)
    with tempfile.TemporaryDirectory() as d:
        model_dir = Path(d) / "model"
        t = time.time()
        build(model_dir, TINY if a.tiny else QWEN25_05B, torch.bfloat16 if cuda else torch.float32)
        rec["build_s"] = round(time.time() - t, 1)
        common = dict(model=str(model_dir), task="arith", device=a.device, dtype=dtype, prompts_per_step=a.prompts,
                      group_size=a.group, max_new_tokens=a.max_new, eval_before=False, eval_limit=a.prompts,
                      eval_max_new_tokens=a.max_new, checkpoint_every=0, micro_batch_size=64)
        t = time.time()
        tr = make_trainer(TrainConfig(**common, steps=a.steps, out_dir=str(Path(d) / "grpo")), progress=False)
        rec["load_and_attach_s"] = round(time.time() - t, 1)
        base = {n: p.detach().clone() for n, p in tr.model.named_parameters() if not p.requires_grad}
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        steps = []
        for s in range(a.steps):
            with tr.autocast():
                steps.append(tr.train_step(s))
        rec["steps"] = [{k: m[k] for k in ("step_s", "rollout_s", "rollout_tokens", "response_length")} for m in steps]
        last = steps[-1]
        rec["rollout_tokens_per_s"] = round(last["rollout_tokens"] / last["rollout_s"], 1)
        rec["step_s"] = last["step_s"]
        if a.check_grad:
            # one SFT step on the reference solutions through the same model and optimizer
            from tinylora.trainers.sft import reference_targets, sft_loss
            from tinylora.trainers.batch import build_batch

            b = build_batch(*reference_targets(tr.task, tr.tokenizer, tr.train_examples[:8]), tr.tokenizer.pad_token_id)
            t = time.time()
            with tr.autocast():
                loss = sft_loss(tr.model, b)
            loss.backward()
            rec["sft_grad_norm"] = tr.optimizer_step(0)
            rec["sft_step_s"] = round(time.time() - t, 3)
        if a.engine_tokens:
            rec["engines"] = compare_engines(tr, a.engine_tokens, cuda)
        if cuda:
            rec["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        rec["base_bit_identical"] = all(torch.equal(p, base[n]) for n, p in tr.model.named_parameters()
                                        if n in base)
        rec["trainable_parameters"] = sum(p.numel() for p in tr.params)
    out = Path(a.out) / "gpu_check.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rec, indent=2))
    print(json.dumps(rec, indent=2))


if __name__ == "__main__":
    main()
