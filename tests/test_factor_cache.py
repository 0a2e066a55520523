"""The factor cache: a hit gives bit-identical factors, a one-ulp change to a weight misses, a corrupt or
wrong file is ignored with a warning (never trusted), and it can be turned off."""

import logging

import pytest
import torch

import tinylora
from tinylora._core import cache as factor_cache
from tinylora.adapters.factors import cached_top_r, weight_key
from tinylora.adapters.svd import top_r
from conftest import make_model


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYLORA_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("TINYLORA_NO_CACHE", raising=False)
    return tmp_path / "cache"


def spiked(m=96, n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(m, m, generator=g))
    V, _ = torch.linalg.qr(torch.randn(n, n, generator=g))
    s = torch.cat([torch.tensor([9.0, 5.0, 2.0]), torch.linspace(1.0, 0.1, min(m, n) - 3)])
    return (U[:, :min(m, n)] * s) @ V[:, :min(m, n)].T


def files(cache):
    return sorted((cache / "factors").glob("*.safetensors"))


def test_a_hit_is_bit_identical_to_computing(cache):
    W = spiked()
    first = cached_top_r(W, 2)
    assert len(files(cache)) == 1 and first.method != "cached"
    again = cached_top_r(W, 2)
    assert again.method == "cached"
    ref = top_r(W, 2)
    for a, b in ((again.U, ref.U), (again.S, ref.S), (again.Vh, ref.Vh)):
        assert torch.equal(a, b)


def test_one_ulp_changes_the_key_and_is_recomputed(cache):
    W = spiked()
    cached_top_r(W, 2)
    W2 = W.clone()
    W2[5, 7] = torch.nextafter(W2[5, 7], torch.tensor(float("inf")))
    assert weight_key(W2, 2, "auto") != weight_key(W, 2, "auto")
    f = cached_top_r(W2, 2)
    assert f.method != "cached" and len(files(cache)) == 2
    assert weight_key(W, 2, "auto") != weight_key(W, 4, "auto") != weight_key(W, 2, "exact")


def test_a_corrupt_file_is_ignored_with_a_warning_and_rewritten(cache, caplog):
    W = spiked(seed=1)
    cached_top_r(W, 2)
    (path,) = files(cache)
    path.write_bytes(b"not a safetensors file")
    with caplog.at_level(logging.WARNING, logger="tinylora.adapters.factors"):
        f = cached_top_r(W, 2)
    assert f.method != "cached" and "unreadable" in caplog.text
    assert cached_top_r(W, 2).method == "cached"  # rewritten: the next attach hits


def test_factors_that_do_not_fit_the_weight_are_refused(cache, caplog):
    """A file whose content does not factor this weight (e.g. a hash collision) fails the residual check."""
    W, other = spiked(seed=2), spiked(seed=3)
    cached_top_r(W, 2)
    (path,) = files(cache)
    from safetensors.torch import load_file, save_file

    wrong = top_r(other, 2)
    t = load_file(path)
    t.update({"U": wrong.U, "S": wrong.S, "Vh": wrong.Vh})
    save_file(t, path)
    with caplog.at_level(logging.WARNING, logger="tinylora.adapters.factors"):
        f = cached_top_r(W, 2)
    assert f.method != "cached" and "fails the check" in caplog.text
    torch.testing.assert_close(f.S, top_r(W, 2).S)


def test_attach_uses_the_cache_and_it_can_be_turned_off(cache, monkeypatch):
    cfg = tinylora.TinyLoRAConfig(u=2, tying="all")
    a = tinylora.attach(make_model("llama", seed=4), cfg)
    n = len(files(cache))
    assert n == len(a.tinylora.names)
    b = tinylora.attach(make_model("llama", seed=4), cfg)
    assert all(s["method"] == "cached" for s in b.tinylora.svd_stats.values())
    x = torch.randint(0, 100, (2, 7))
    for m in (a, b):
        m.tinylora.v[0].data.fill_(0.7)
    assert torch.equal(a(x).logits, b(x).logits)  # the same adapted model, bit for bit
    monkeypatch.setenv("TINYLORA_NO_CACHE", "1")
    c = tinylora.attach(make_model("llama", seed=5), cfg)
    assert len(files(cache)) == n and not any(s["method"] == "cached" for s in c.tinylora.svd_stats.values())


def test_info_and_clear(cache):
    cached_top_r(spiked(seed=6), 2)
    i = factor_cache.info()
    assert i["files"] == 1 and i["bytes"] > 0 and i["path"] == str(cache)
    assert factor_cache.clear()["files"] == 1 and factor_cache.info()["files"] == 0


def test_cache_commands(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "TINYLORA_CACHE_DIR": str(tmp_path / "c")}
    run = lambda *a: subprocess.run([sys.executable, "-m", "tinylora", *a], env=env, capture_output=True,  # noqa: E731
                                    text=True, timeout=300)
    r = run("demo", "--out", str(tmp_path / "demo"))
    assert r.returncode == 0, r.stderr
    info = run("cache", "info")
    assert info.returncode == 0 and str(tmp_path / "c") in info.stdout and " 0 files" not in info.stdout
    assert "(factors " in info.stdout  # the share of each kind (factors, gguf)
    assert run("cache", "clear").returncode == 0 and " 0 files" in run("cache", "info").stdout
    r = run("export", "--no-cache", "--model", str(tmp_path / "demo" / "base"), "--adapter",
            str(tmp_path / "demo" / "skill.safetensors"), "--format", "merged", "--out", str(tmp_path / "m"))
    assert r.returncode == 0, r.stderr
    assert " 0 files" in run("cache", "info").stdout  # --no-cache: nothing read, nothing written
