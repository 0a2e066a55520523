"""Data parallelism under torchrun (gloo on CPU): 2 ranks give what 1 rank gives, sharded evaluation
equals single-process evaluation, and a dead rank ends the job instead of hanging it."""

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tinylora._core.distributed import Dist

HERE = Path(__file__).resolve().parent


def _env(**extra):
    # one thread per process in both runs (torchrun sets it for its workers), so the arithmetic matches
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    env.update(extra)
    return env


def tinylora(*args, timeout=300):
    r = subprocess.run([sys.executable, "-m", "tinylora", *args], env=_env(), capture_output=True, text=True,
                       timeout=timeout)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def test_shards_cover_every_item_once_in_order():
    for world in range(1, 6):
        for n in range(0, 12):
            shards = [Dist(rank=r, world=world).shard(list(range(n))) for r in range(world)]
            assert [x for s in shards for x in s] == list(range(n))
            assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_device_resolution_refuses_what_is_not_there():
    from tinylora._core.distributed import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(ValueError, match="no CUDA"):
            resolve_device("cuda")
    for bad in ("tpu", "cuda:x"):
        with pytest.raises(ValueError, match="device must be"):
            resolve_device(bad)
    from tinylora.trainers.config import TrainConfig

    with pytest.raises(ValueError, match="device must be"):  # refused when the config is read, not at launch
        TrainConfig(device="gpu")


@pytest.fixture(scope="module")
def task_file(tmp_path_factory):
    from tinylora.tasks.arith_problems import problems

    path = tmp_path_factory.mktemp("dist") / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"Q: {p.question}\nA:", "answer": str(p.answer)}) + "\n"
                            for p in problems("train", 40)))
    return path


def _train_args(model, task_file, **over):
    args = {"model": model, "task": "jsonl", "task_args.path": task_file,
            "task_args.reward": "rewards_for_tests:even_length", "steps": 3, "prompts_per_step": 4, "group_size": 4,
            "max_new_tokens": 16, "eval_before": "false", "eval_limit": 6, "eval_batch_size": 4,
            "eval_max_new_tokens": 16, "checkpoint_every": 0, "lr": 0.05, "device": "cpu", **over}
    return [f"{k}={v}" for k, v in args.items()]


def _lines(path):
    return [json.loads(ln) for ln in Path(path).read_text().splitlines()]


@pytest.mark.parametrize("algo,adapter", [("grpo", None), ("sft", "{method: lora, r: 1}")])
def test_two_ranks_give_the_one_rank_run(quick_backbone, task_file, tmp_path, algo, adapter):
    """GRPO with 13 parameters, and rejection SFT with LoRA (a larger all-reduce: 2,944 numbers)."""
    extra = {"sft_source": "rejection", "adapter": adapter, "lr": 0.01} if algo == "sft" else {}
    args = _train_args(quick_backbone, task_file, algo=algo, **extra)
    tinylora("train", *args, f"out_dir={tmp_path / 'one'}")
    two = tinylora("train", "--nproc", "2", *args, f"out_dir={tmp_path / 'two'}")
    assert "on 2 ranks" in two.stdout
    one_m, two_m = _lines(tmp_path / "one" / "metrics.jsonl"), _lines(tmp_path / "two" / "metrics.jsonl")
    assert sum(m["grad_norm"] > 0 for m in one_m) >= 2  # not vacuous: the adapter really moved
    if algo == "grpo":  # the same global batch: the same completions, token for token
        assert (tmp_path / "one" / "completions.jsonl").read_text() == (tmp_path / "two" / "completions.jsonl").read_text()
    for a, b in zip(one_m, two_m):  # the gradient is the global one (token-mean over all ranks' tokens)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-5, abs=1e-9)
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-9)
        assert a.get("reward_mean") == b.get("reward_mean")
    one_a, two_a = load_file(tmp_path / "one" / "adapter.safetensors"), load_file(tmp_path / "two" / "adapter.safetensors")
    assert one_a.keys() == two_a.keys()
    for k in one_a:
        torch.testing.assert_close(one_a[k], two_a[k], rtol=1e-5, atol=1e-7)
    assert any(t.abs().max() > 1e-4 for t in one_a.values())
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["world_size"] == 2


@pytest.mark.parametrize("method", ["openai", "cma"])
def test_two_ranks_give_the_one_rank_es_run(quick_backbone, task_file, tmp_path, method):
    """ES splits the members across ranks and exchanges only fitness scalars: the same adapter bytes."""
    args = _train_args(quick_backbone, task_file, algo="es", steps=3, **{
        "es.method": method, "es.population": 6, "es.sigma": 0.5, "es.samples": 2, "es.eval_every": 2, "es.eval_limit": 4,
        "es.eval_split": "test", "lr": 0.2})
    tinylora("train", *args, f"out_dir={tmp_path / 'one'}")
    tinylora("train", "--nproc", "2", *args, f"out_dir={tmp_path / 'two'}")
    strip = lambda ms: [{k: v for k, v in m.items() if k != "step_s"} for m in ms]  # noqa: E731
    one_m, two_m = _lines(tmp_path / "one" / "metrics.jsonl"), _lines(tmp_path / "two" / "metrics.jsonl")
    assert strip(one_m) == strip(two_m) and all(m["members"] == 6 for m in one_m)
    assert any(m["step_norm"] > 0 for m in one_m)  # not vacuous: the mean moved
    a = (tmp_path / "one" / "adapter.safetensors").read_bytes()
    assert a == (tmp_path / "two" / "adapter.safetensors").read_bytes()


def test_resume_under_torchrun_continues_the_run(quick_backbone, task_file, tmp_path):
    """A 2-rank run stopped at a checkpoint and resumed on 2 ranks ends where one uninterrupted run ends."""
    args = _train_args(quick_backbone, task_file, steps=4, checkpoint_every=2)
    tinylora("train", *args, f"out_dir={tmp_path / 'whole'}")
    tinylora("train", "--nproc", "2", *args, "steps=2", f"out_dir={tmp_path / 'cut'}")
    tinylora("train", "--nproc", "2", "--resume", str(tmp_path / "cut"), "steps=4")
    assert (tmp_path / "whole" / "completions.jsonl").read_text() == (tmp_path / "cut" / "completions.jsonl").read_text()
    a, b = load_file(tmp_path / "whole" / "adapter.safetensors"), load_file(tmp_path / "cut" / "adapter.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-7)
    assert [m["step"] for m in _lines(tmp_path / "cut" / "metrics.jsonl")] == [0, 1, 2, 3]


def test_sharded_evaluation_equals_single_process(quick_backbone, tmp_path):
    common = ["eval", "--model", str(quick_backbone), "--task", "arith", "--task-arg", "n_test=11", "--limit", "11",
              "--samples", "2", "--temperature", "1.0", "--batch-size", "3", "--max-new-tokens", "24", "--device", "cpu"]
    tinylora(*common, "--out", str(tmp_path / "one"))
    tinylora(*common, "--nproc", "2", "--out", str(tmp_path / "two"))
    one = {r["id"]: r for r in _lines(tmp_path / "one" / "examples.jsonl")}
    two = {r["id"]: r for r in _lines(tmp_path / "two" / "examples.jsonl")}
    assert len(one) == 11 and one == two
    s1, s2 = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("one", "two"))
    assert (s1["n"], s1["accuracy"], s1["ci95"], s1["pass@k"]) == (s2["n"], s2["accuracy"], s2["ci95"], s2["pass@k"])


def _pids_with(mark: str, rank: str) -> list[int]:
    out = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            env = dict(kv.split("=", 1) for kv in (proc / "environ").read_text().split("\0") if "=" in kv)
        except OSError:
            continue
        if env.get("TINYLORA_TEST_MARK") == mark and env.get("RANK") == rank and "LOCAL_RANK" in env:
            out.append(int(proc.name))
    return out


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the rank's process through /proc")
def test_a_killed_rank_ends_the_job_with_an_error(quick_backbone, task_file, tmp_path):
    mark = uuid.uuid4().hex
    run = tmp_path / "run"
    args = _train_args(quick_backbone, task_file, steps=100000, dist_timeout_s=60)
    p = subprocess.Popen([sys.executable, "-m", "tinylora", "train", "--nproc", "2", *args, f"out_dir={run}"],
                         env=_env(TINYLORA_TEST_MARK=mark), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 600  # a hang guard: the run waits only for its own start
        while not ((run / "metrics.jsonl").exists() and (run / "metrics.jsonl").read_text().count("\n") >= 2):
            assert p.poll() is None and time.time() < deadline, "the 2-rank run did not start"
            time.sleep(0.5)
        victims = _pids_with(mark, "1")
        assert len(victims) == 1
        os.kill(victims[0], signal.SIGKILL)
        _, err = p.communicate(timeout=600)  # a hang guard only: torchrun notices the death, not a timeout
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode != 0
    assert "the 2-process job failed" in err and "SIGKILL" in err
