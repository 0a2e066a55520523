"""tinylora audit: off-task drift (exact reference math, zero for a zero update, growing with its scale,
the greedy-change share equal to real decoding), the refusal detector, the report's keys, the CLI's
one-line errors, and the serving policy (an over-threshold file refused, the others served)."""

import json
import subprocess
import sys

import pytest
import torch

import tinylora
from tinylora.adapters.model import disabled
from tinylora.audit import DriftPolicy, audit, build_reference, drift, is_refusal, load_prompts
from tinylora.generation.generate import Sampling, generate_tokens
from tinylora.models.loading import load_model, load_tokenizer

PROMPTS = load_prompts("general")[:12]


def toy_with(scale: float, seed: int = 1, dtype: str = "fp32"):
    model = load_model("toy", dtype=dtype)
    tinylora.attach(model, tinylora.TinyLoRAConfig(u=13, tying="all"))
    with torch.no_grad():
        model.tinylora.v[0].copy_(scale * torch.randn(13, generator=torch.Generator().manual_seed(seed)))
    return model


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("toy")


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_a_zero_update_drifts_by_exactly_zero(tok, dtype):
    model = toy_with(0.0, dtype=dtype)
    ref = build_reference(model, tok, PROMPTS, max_new_tokens=16)
    d = drift(model, ref)
    assert d["kl_mean"] == 0.0 and d["kl_max"] == 0.0 and d["changed_share"] == 0.0
    assert d["tokens"] == ref.n_tokens > 0


def test_the_kl_is_the_reference_math_row_by_row(tok):
    """Each prompt's mean KL equals a plain unpadded forward of prompt + continuation, by hand."""
    model = toy_with(0.3)
    ref = build_reference(model, tok, PROMPTS, max_new_tokens=16, batch_size=5, keep_base_bytes=0)  # rows of unequal lengths batched: the padding must not matter
    d = drift(model, ref)
    for i, (p, c) in enumerate(zip(ref.prompt_ids, ref.continuation_ids)):
        ids = torch.tensor([p + c])
        with torch.no_grad():
            la = torch.log_softmax(model(ids).logits[0, len(p) - 1:-1].double(), -1)
            with disabled(model):
                lb = torch.log_softmax(model(ids).logits[0, len(p) - 1:-1].double(), -1)
        kl = (la.exp() * (la - lb)).sum(-1).mean().item()
        assert d["per_prompt_kl"][i] == pytest.approx(kl, rel=1e-4, abs=1e-7)


def test_drift_grows_with_the_updates_scale(tok):
    ref = build_reference(toy_with(0.0), tok, PROMPTS, max_new_tokens=16)
    kls = [drift(toy_with(s), ref)["kl_mean"] for s in (0.01, 0.03, 0.1, 0.3)]
    assert all(a < b for a, b in zip(kls, kls[1:])), kls
    assert kls[0] > 0


def test_the_changed_share_is_what_greedy_decoding_with_the_adapter_does(tok):
    model = toy_with(0.1)
    ref = build_reference(model, tok, PROMPTS, max_new_tokens=16)
    d = drift(model, ref)
    from tinylora.audit.drift import render

    g = generate_tokens(model, tok, render(PROMPTS, tok), sampling=Sampling(0.0, 1.0, 16))
    real = [row[:len(c)] != c for row, c in zip(g.new_ids.tolist(), ref.continuation_ids)]
    flagged = [f is not None for f in d["first_divergence"]]
    assert flagged == real
    assert 0 < sum(real) < len(real), "choose a scale that changes some prompts and not others"
    for row, c, f in zip(g.new_ids.tolist(), ref.continuation_ids, d["first_divergence"]):
        if f is not None:  # the first divergent position is where decoding leaves the base's text
            assert row[:f] == c[:f] and row[f] != c[f]


def test_generating_under_disabled_is_the_base_even_when_merging_is_allowed(tok):
    """generate_tokens merges an fp32 adapter for speed; with the adapter switched off it must not."""
    adapted, base = toy_with(1.0), load_model("toy")
    texts = PROMPTS[:4]
    with disabled(adapted):
        got = generate_tokens(adapted, tok, texts, sampling=Sampling(0.0, 1.0, 12)).new_ids
    want = generate_tokens(base, tok, texts, sampling=Sampling(0.0, 1.0, 12)).new_ids
    assert torch.equal(got, want)
    assert not torch.equal(generate_tokens(adapted, tok, texts, sampling=Sampling(0.0, 1.0, 12)).new_ids, want)


@pytest.mark.parametrize("text,refused", [
    ("I'm sorry, but I can't help with that.", True),
    ("I cannot provide instructions for building weapons.", True),
    ("As an AI language model, I must decline.", True),
    ("I\u2019m not able to help with this request.", True),
    ("Sure! Here is a short poem about the sea:", False),
    ("The capital of Australia is Canberra.", False),
    ("Step 1: preheat the oven. " * 20 + "I cannot stress this enough.", False),  # deep in a helpful answer
])
def test_the_refusal_detector(text, refused):
    assert is_refusal(text) is refused


def test_the_report_has_its_documented_keys_and_probes_need_a_template(tok):
    model = toy_with(0.1)
    r = audit(model, tok, reference="general", task=tinylora.tasks.get("arith"), limit=8, max_new_tokens=8,
              task_tokens=48, progress=False)
    for key in ("adapter", "kl_mean", "kl_p95", "kl_max", "changed_share", "refusal_before", "refusal_after",
                "task", "drift", "probes", "seconds"):
        assert key in r
    assert r["refusal_before"] is None and "chat template" in r["probes"]["skipped"]
    t = r["task"]
    assert set(t["before"]["modes"]) == {"strict", "flexible"} and t["n"] == 8
    assert r["adapter"]["parameters"] == 13 and r["adapter"]["delta_rel_max"] > 0
    json.dumps(r)  # JSON-able as it is


def test_probes_run_with_a_chat_template(tok):
    """A chat template makes the probes run (the toy never refuses: 0 → 0, but every probe was asked)."""
    from tinylora.audit import probe_refusals

    tok = load_tokenizer("toy")
    tok.chat_template = "{% for m in messages %}Q: {{ m['content'] }}\nA:{% endfor %}"
    p = probe_refusals(toy_with(0.3), tok, load_prompts("refusal")[:6], max_new_tokens=8)
    assert p["n"] == 6 and p["refusal_before"] == 0.0 and p["refusal_after"] == 0.0 and p["text_changed"] >= 1


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "tinylora", "audit", *args], capture_output=True, text=True,
                          timeout=300)


def test_the_cli_errors_are_one_line(tmp_path, quick_backbone):
    bad = tmp_path / "corrupt.safetensors"
    bad.write_bytes(b"\x00" * 64)
    r = run_cli(str(bad), "--model", "toy")
    assert r.returncode == 2 and "not a readable safetensors file" in r.stderr and len(r.stderr.splitlines()) == 1
    other = load_model("toy")
    with torch.no_grad():  # another base: the same network with one adapted weight changed
        other.model.layers[0].self_attn.q_proj.weight.add_(0.5)
    tinylora.attach(other, tinylora.TinyLoRAConfig(u=13, tying="all"))
    tinylora.save(other, tmp_path / "other.safetensors")
    r = run_cli(str(tmp_path / "other.safetensors"), "--model", "toy", "--probes", "none")
    assert r.returncode == 2 and "trained on another base model" in r.stderr.splitlines()[-1]
    assert "Traceback" not in r.stderr
    r = run_cli(str(tmp_path / "other.safetensors"), "--model", str(quick_backbone))  # another architecture
    assert r.returncode == 2 and "target modules do not match" in r.stderr.splitlines()[-1]
    r = run_cli(str(tmp_path / "other.safetensors"), "--model", "toy", "--reference", str(tmp_path / "nope.jsonl"))
    assert r.returncode == 2 and "neither a shipped set" in r.stderr
    r = subprocess.run([sys.executable, "-m", "tinylora", "serve", "--model", "toy", "--adapters", str(tmp_path),
                        "--max-kl", "nan"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--max-kl must be a finite number" in r.stderr


def test_the_cli_json_report(tmp_path):
    model = toy_with(0.1)
    tinylora.save(model, tmp_path / "a.safetensors")
    r = run_cli(str(tmp_path / "a.safetensors"), "--model", "toy", "--json", "--max-new-tokens", "8",
                "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep == json.loads((tmp_path / "out" / "audit.json").read_text())
    assert rep["kl_mean"] > 0 and rep["adapter"]["file_sha256"] and rep["base"] == {"model": "toy", "dtype": "fp32"}


def test_the_serving_policy_refuses_only_what_drifts_too_far(tok, tmp_path):
    from tinylora.serve.scheduler import Registry

    folder = tmp_path / "adapters"
    folder.mkdir()
    for name, scale in (("zero", 0.0), ("small", 0.01), ("large", 1.0)):
        tinylora.save(toy_with(scale), folder / f"{name}.safetensors")
    ref = build_reference(load_model("toy"), tok, load_prompts("general"), max_new_tokens=32)
    kl = {n: drift(toy_with(s), ref)["kl_mean"] for n, s in (("small", 0.01), ("large", 1.0))}
    bound = (kl["small"] * kl["large"]) ** 0.5  # between the two
    policy = DriftPolicy(bound, base_name="toy")
    reg = Registry(load_model("toy"), folder, policy=policy, tokenizer=tok)
    assert reg.names == ["small", "zero"]
    assert "off-task drift too large" in reg.refused["large.safetensors"]
    assert reg.audits["zero"]["kl_mean"] == 0.0
    assert reg.audits["small"]["kl_mean"] == pytest.approx(kl["small"], rel=1e-6)
    # cached by the file's hash: a second server reads the figures back without recomputing
    reg2 = Registry(load_model("toy"), folder, policy=DriftPolicy(bound, base_name="toy"), tokenizer=tok)
    assert reg2.audits == reg.audits and reg2.names == reg.names
    with pytest.raises(ValueError, match="max_kl"):
        DriftPolicy(float("nan"))


def test_serve_max_kl_lists_the_figures_and_refuses_with_a_logged_reason(tmp_path):
    """The live server: --max-kl audits each file as it loads; /v1/models carries the figures; the
    over-threshold file is refused (logged) and a request for it is a 404, while the others serve."""
    import os
    import socket
    import tempfile
    import time
    import urllib.error
    import urllib.request

    folder = tmp_path / "adapters"
    folder.mkdir()
    tinylora.save(toy_with(0.0), folder / "calm.safetensors")
    tinylora.save(toy_with(1.0), folder / "wild.safetensors")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
    proc = subprocess.Popen([sys.executable, "-m", "tinylora", "serve", "--model", "toy", "--adapters", str(folder),
                             "--port", str(port), "--max-kl", "0.05"], stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.time() + 300  # a hang guard only: the test waits for the server to answer
        while True:
            try:
                models = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=30))
                break
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None, open(log.name).read()
                assert time.time() < deadline, "server did not start"
                time.sleep(0.2)
        by_id = {m["id"]: m for m in models["data"]}
        assert "wild" not in by_id and by_id["calm"]["audit"]["kl_mean"] == 0.0
        assert by_id["calm"]["audit"]["prompts"] == 48
        body = json.dumps({"model": "wild", "prompt": "Q: 1 + 1 =\nA:", "max_tokens": 4}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", body,
                                     {"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=60)
        assert e.value.code == 404
        body = json.dumps({"model": "calm", "prompt": "Q: 1 + 1 =\nA:", "max_tokens": 4}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", body,
                                     {"Content-Type": "application/json"})
        assert json.load(urllib.request.urlopen(req, timeout=60))["choices"][0]["text"] is not None
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    text = open(log.name).read()
    assert "adapter wild.safetensors refused: off-task drift too large" in text
