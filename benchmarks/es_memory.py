"""Peak memory of one ES step against one GRPO step and against plain generation of the same rows, on a
SmolLM2-135M-shaped model (random weights, the toy tokenizer), each in a fresh process.

    python benchmarks/es_memory.py          # ≈ 3 min on 2 cores

ES has no backward pass and no gradient buffers: its step is K members × B prompts of batched
greedy generation (tinylora.adapters.multi), so its peak should be that of generating K·B rows. Reported:
peak resident memory (ru_maxrss) of each process, and the same minus the process's resident
memory right after the model loaded (what the step itself added).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from tinylora.models.synthetic import save_smollm2_shape

CHILD = r'''
import json, resource, sys, tempfile
import torch
torch.set_num_threads(2)
kind, model_dir, members, prompts, tokens = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
from tinylora.train_config import TrainConfig
from tinylora.trainers import make_trainer
algo = {"es": "es", "grpo": "grpo", "generate": "es"}[kind]
cfg = TrainConfig(model=model_dir, algo=algo, out_dir=tempfile.mkdtemp(), prompts_per_step=prompts, group_size=4,
                  max_new_tokens=tokens, eval_before=False, log_completions=False,
                  es={"population": members, "eval_every": 0, "keep_best": False, "rows_per_forward": members * prompts})
tr = make_trainer(cfg, progress=False)
loaded = rss_mb()
if kind == "generate":  # the same K·B rows on the base alone (adapter disabled): plain inference
    import tinylora
    from tinylora.engine import decode
    from tinylora.generation import Sampling, prepare_tokenizer
    ex = [e for _, e in tr.examples_for(0)]
    tok = prepare_tokenizer(tr.tokenizer)
    enc = tok([tr.task.prompt(e, tok) for e in ex] * members, return_tensors="pt", padding=True)
    with tinylora.disabled(tr.model):
        decode(tr.model, enc["input_ids"], enc["attention_mask"], sampling=Sampling(0.0, 1.0, tokens),
               eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
else:
    tr.train_step(0)
print(json.dumps({"kind": kind, "loaded_mb": loaded, "peak_mb": rss_mb()}))
'''


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--members", type=int, default=16)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        save_smollm2_shape(Path(d) / "m")
        rows = []
        for kind in ("generate", "es", "grpo"):
            r = subprocess.run([sys.executable, "-c", CHILD, kind, str(Path(d) / "m"), str(args.members),
                                str(args.prompts), str(args.tokens)], capture_output=True, text=True, check=True)
            rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
    names = {"generate": f"generate {args.members}×{args.prompts} rows on the base (greedy)",
             "es": f"ES step: {args.members} members × {args.prompts} prompts",
             "grpo": f"GRPO step: {args.prompts} prompts × 4 samples"}
    print(f"SmolLM2-135M shape (random weights), fp32, ≤{args.tokens} new tokens")
    print("| process | resident after load (MB) | peak (MB) | added by the step (MB) |\n|---|---|---|---|")
    for r in rows:
        print(f"| {names[r['kind']]} | {r['loaded_mb']:.0f} | {r['peak_mb']:.0f} | {r['peak_mb'] - r['loaded_mb']:.0f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
