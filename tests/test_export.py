import json

import pytest
import torch

import tinylora
from conftest import ARCHS, logits, make_model, tokens
from test_contract import randomize_adapter

peft = pytest.importorskip("peft")


def adapted(arch, cfg):
    m = make_model(arch)
    tinylora.attach(m, cfg)
    randomize_adapter(m, seed=4)
    return m


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("cfg", [
    tinylora.TinyLoRAConfig(u=13, tying="all"),
    tinylora.TinyLoRAConfig(u=3, tying="structured", n_tie=2, alpha=2.0, seed=9),
    tinylora.LoRAXSConfig(r=2),
], ids=["tinylora-all", "tinylora-structured", "lora_xs"])
def test_peft_tinylora_checkpoint_matches(arch, cfg, tmp_path):
    m = adapted(arch, cfg)
    x = tokens()
    want = logits(m, x)
    tinylora.export(m, tmp_path / "peft", format="peft-tinylora")
    loaded = peft.PeftModel.from_pretrained(make_model(arch), str(tmp_path / "peft"))
    assert type(loaded.peft_config["default"]).__name__ == "TinyLoraConfig"
    got = logits(loaded, x)
    assert torch.allclose(got, want, atol=1e-5, rtol=0), (got - want).abs().max()


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("cfg", [
    tinylora.TinyLoRAConfig(u=5, tying="tiled", n_tie=4),
    tinylora.LoRAXSConfig(r=3),
    tinylora.LoRAConfig(r=4, alpha=8.0),
], ids=["tinylora", "lora_xs", "lora"])
def test_peft_lora_adapter_matches(arch, cfg, tmp_path):
    m = adapted(arch, cfg)
    x = tokens()
    want = logits(m, x)
    tinylora.export(m, tmp_path / "lora", format="peft-lora")
    conf = json.loads((tmp_path / "lora" / "adapter_config.json").read_text())
    assert conf["peft_type"] == "LORA" and conf["r"] == cfg.r
    loaded = peft.PeftModel.from_pretrained(make_model(arch), str(tmp_path / "lora"))
    assert torch.allclose(logits(loaded, x), want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_merged_export_loads_as_plain_hf_model(arch, tmp_path):
    from transformers import AutoModelForCausalLM

    m = adapted(arch, tinylora.TinyLoRAConfig())
    x = tokens()
    want = logits(m, x)
    base_state = {k: v.clone() for k, v in m.state_dict().items()}
    tinylora.export(m, tmp_path / "merged", format="merged")
    plain = AutoModelForCausalLM.from_pretrained(str(tmp_path / "merged"))
    assert not any("tinylora" in k or "base_layer" in k for k in plain.state_dict())
    assert torch.allclose(logits(plain, x), want, atol=1e-5)
    assert all(torch.equal(v, base_state[k]) for k, v in m.state_dict().items())  # unmerged again


def test_full_update_cannot_be_a_lora(tmp_path):
    m = adapted("qwen2", tinylora.FullConfig(target_modules=["q_proj"]))
    with pytest.raises(ValueError, match="not low-rank"):
        tinylora.export(m, tmp_path / "x", format="peft-lora")
    with pytest.raises(ValueError, match="needs a tinylora or lora_xs"):
        tinylora.export(m, tmp_path / "x", format="peft-tinylora")
    with pytest.raises(ValueError, match="format must be"):
        tinylora.export(m, tmp_path / "x", format="gguf")


def test_cli_merged_export_loads_on_its_own(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tinylora.cli.main import main
    from tinylora.models.loading import load_model

    model = load_model("toy")
    tinylora.attach(model, tinylora.TinyLoRAConfig(u=1), progress=False)
    with torch.no_grad():
        next(iter(tinylora.trainable_parameters(model))).fill_(0.05)
    tinylora.save(model, tmp_path / "a.safetensors")
    assert main(["export", "--model", "toy", "--adapter", str(tmp_path / "a.safetensors"), "--format", "merged",
                 "--out", str(tmp_path / "m")]) == 0
    tok = AutoTokenizer.from_pretrained(tmp_path / "m")  # the folder alone: model and tokenizer
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    ids = tok("Q: Tom has 3 apples.\nA:", return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad(), tinylora.merged(model):
        assert torch.allclose(plain(ids).logits, model(ids).logits, atol=1e-5)
