"""How much a GRPO reward can teach Qwen2.5-Coder-0.5B-Instruct at the start, before choosing a trainer.

    tinylora models install qwen2.5-coder-0.5b-instruct
    python benchmarks/gsm8k_signal.py --data-dir ../shared/data --prompts 16 --group 8 --temperature 1.0

G samples of each of N GSM8K *train* problems (the test split is never looked at) in the model's
chat template, scored three ways from the same completions: ``strict`` (only ``#### N``: the task's
strict score), ``marked`` (``####``, ``\\boxed{}`` or "the answer is": the gsm8k training reward) and
``flexible`` (any final-answer reading, evaluation only). For each: the share of samples rewarded,
the share of groups whose rewards differ (a group whose samples all score alike has zero advantage
and teaches GRPO nothing), and pass@G. Also how many samples write ``####`` at all and how many hit
the token cap. Seeds are per (problem, sample), so the figures are reproducible.
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--data-dir", help="local GSM8K (DIR/gsm8k/train.jsonl)")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--max-new-tokens", type=int, default=320)
    ap.add_argument("--batch", type=int, default=64, help="rows generated together")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from tinylora import tasks
    from tinylora._core.seeding import stream_key
    from tinylora._core.threads import cpu_features
    from tinylora.generation.generate import Sampling, generate_tokens
    from tinylora.models.loading import load_model, load_tokenizer
    from tinylora.tasks.answers import extract_final_number, numbers_equal

    tok, model = load_tokenizer(args.model), load_model(args.model)
    task = tasks.get("gsm8k", data_dir=args.data_dir)
    examples = task.load("train")[: args.prompts]
    G, per_batch = args.group, max(1, args.batch // args.group)
    texts, capped = [], []
    t0 = time.time()
    for b in range(0, len(examples), per_batch):
        chunk = examples[b:b + per_batch]
        seeds = [stream_key(args.seed, b + j, s) for j in range(len(chunk)) for s in range(G)]
        g = generate_tokens(model, tok, [task.prompt(e, tok) for e in chunk], n=G, seeds=seeds,
                            sampling=Sampling(args.temperature, 1.0, args.max_new_tokens))
        texts += tok.batch_decode(g.new_ids, skip_special_tokens=True)
        capped += [tok.eos_token_id not in row for row in g.new_ids.tolist()]
        print(f"{min(b + per_batch, len(examples))}/{len(examples)} problems, {time.time() - t0:.0f} s", flush=True)
    out = {"model": args.model, "prompts": len(examples), "group": G, "temperature": args.temperature,
           "max_new_tokens": args.max_new_tokens, "seconds": round(time.time() - t0, 1), "cpu": cpu_features(),
           "wrote_hash": sum("####" in t for t in texts) / len(texts), "capped": sum(capped) / len(capped)}
    for mode in ("strict", "marked", "flexible"):
        r = [float(numbers_equal(extract_final_number(t, mode), examples[i // G].answer)) for i, t in enumerate(texts)]
        groups = [r[k * G:(k + 1) * G] for k in range(len(examples))]
        out[mode] = {"reward_mean": sum(r) / len(r), "groups_with_signal": sum(0 < sum(g) < G for g in groups) / len(groups),
                     "pass_at_group": sum(sum(g) > 0 for g in groups) / len(groups)}
    print(json.dumps(out, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
