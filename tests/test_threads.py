"""The threading policy: a passive OpenMP wait set before torch loads (unless the user chose one),
threads shared out across --nproc ranks, --threads checked before anything slow."""

import os
import subprocess
import sys

import pytest

from tinylora._core.threads import available_cores, threads_per_rank

PROBE = ("import os, sys\nimport tinylora._core.threads as t\nfrom tinylora.cli.main import main\nseen = []\n"
         "real = t.apply_wait_policy\n"
         "t.apply_wait_policy = lambda: (seen.append('torch' in sys.modules), real())[1]  # observe when it runs\n"
         "main(['inspect', '/nonexistent.safetensors'])\n"
         "print(os.environ.get('OMP_WAIT_POLICY'), os.environ.get('GOMP_SPINCOUNT'), seen[0])")


def run_probe(**env_over):
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(env_over)
    r = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120)
    return r.stdout.split()


def test_the_command_line_sets_a_passive_wait_before_torch_loads():
    assert run_probe() == ["PASSIVE", "None", "False"]  # set, and torch not loaded yet when it was


@pytest.mark.parametrize("var,value", [("OMP_WAIT_POLICY", "ACTIVE"), ("GOMP_SPINCOUNT", "1000")])
def test_a_users_wait_policy_is_kept(var, value):
    out = run_probe(**{var: value})
    assert (out[0] if var == "OMP_WAIT_POLICY" else out[1]) == value
    assert out[0] == (value if var == "OMP_WAIT_POLICY" else "None")


def test_cores_are_shared_out_across_ranks():
    n = available_cores()
    assert threads_per_rank(1) == n and threads_per_rank(n) == 1 and threads_per_rank(4 * n) == 1
    assert threads_per_rank(2) == max(1, n // 2)


def test_bad_threads_is_refused_before_the_model_loads(tmp_path):
    r = subprocess.run([sys.executable, "-m", "tinylora", "eval", "--model", str(tmp_path / "absent"), "--task", "arith",
                        "--threads", "0"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "threads must be >= 1" in r.stderr and "Traceback" not in r.stderr
