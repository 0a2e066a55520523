import json
import subprocess
import sys

import pytest
import torch

import tinylora
from tinylora.cli import main
from conftest import logits, tokens


def test_demo_inspect_export(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
    adapter = tmp_path / "demo" / "skill.safetensors"
    capsys.readouterr()
    assert main(["inspect", str(adapter)]) == 0
    out = capsys.readouterr().out
    assert "method:          tinylora" in out and "parameters:      13" in out and "26 bytes (bf16)" in out
    info = tinylora.read(adapter)
    values = info.tensors["v"].float().flatten().tolist()
    assert f"v = {json.dumps([values])}" in out  # the trained numbers themselves
    assert main(["inspect", "--json", str(adapter)]) == 0
    dumped = json.loads(capsys.readouterr().out)
    assert dumped["meta"]["fingerprint"] == info.meta["fingerprint"]

    out_dir = tmp_path / "merged"
    assert main(["export", "--model", str(tmp_path / "demo" / "base"), "--adapter", str(adapter),
                 "--format", "merged", "--out", str(out_dir)]) == 0
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(tmp_path / "demo" / "base"))
    tinylora.load(base, adapter)
    merged = AutoModelForCausalLM.from_pretrained(str(out_dir))
    x = tokens()
    assert torch.allclose(logits(merged, x), logits(base, x), atol=1e-5)


def test_errors_are_one_clear_line(tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"garbage!")
    assert main(["inspect", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tinylora inspect: error:") and "truncated or corrupted" in err


def test_console_script_help():
    out = subprocess.run([sys.executable, "-m", "tinylora", "--help"], capture_output=True, text=True, check=True)
    for cmd in ("inspect", "export", "demo"):
        assert cmd in out.stdout
    with pytest.raises(SystemExit):
        main(["export", "--model", "x"])  # missing required arguments: argparse explains
