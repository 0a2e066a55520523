"""A new parameterization is one module: a config, a Delta and one registration — then attach, the
adapter file, configs by name and export work with it, with no other file changed."""

from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
from torch import nn

import tinylora
from tinylora.adapters import methods
from tinylora.adapters.config import AdapterConfig, config_from_dict
from tinylora.adapters.layers import Delta
from conftest import logits, make_model, tokens


@dataclass
class RowScaleConfig(AdapterConfig):
    """ΔW = diag(s) W: one trained scale per output row (a toy method, for this test only)."""

    method: ClassVar[str] = "rowscale"


class RowScaleDelta(Delta):
    def __init__(self, W: torch.Tensor):
        super().__init__()
        self.register_buffer("W", W.detach().float().clone())
        self.s = nn.Parameter(torch.zeros(W.shape[0]))

    def delta_weight(self):
        return self.s[:, None] * self.W

    def add_to(self, x, y):
        return y + (x.float() @ self.W.T * self.s).to(y.dtype)


@pytest.fixture
def rowscale(monkeypatch):
    from tinylora.adapters.config import CONFIG_CLASSES

    monkeypatch.setattr(methods, "METHODS", dict(methods.METHODS))
    monkeypatch.setitem(CONFIG_CLASSES, "rowscale", RowScaleConfig)
    methods.register(methods.Method(
        "rowscale", RowScaleConfig, lambda c, ctx: RowScaleDelta(ctx.weight),
        lambda shared, mods: {f"s.{n}": m.delta.s.float().cpu() for n, m in mods.items()},
        lambda shared, mods, t: [m.delta.s.copy_(t[f"s.{n}"]) for n, m in mods.items()], default_lr=1e-3))
    yield


def test_a_method_registered_in_one_place_attaches_saves_and_loads(rowscale, tmp_path):
    model = make_model("qwen2", seed=1)
    x = tokens()
    base = logits(model, x)
    cfg = config_from_dict({"method": "rowscale", "target_modules": ["q_proj", "v_proj"]})
    tinylora.attach(model, cfg)
    assert torch.equal(logits(model, x), base)  # zero at init
    with torch.no_grad():
        for p in tinylora.trainable_parameters(model):
            p.normal_(0, 0.1, generator=torch.Generator().manual_seed(0))
    adapted = logits(model, x)
    assert not torch.allclose(adapted, base)
    for name, mod in tinylora.adapted_modules(model).items():  # the fast path is the dense ΔW
        w = mod.base_layer.weight.float()
        torch.testing.assert_close(mod.delta.delta_weight(), mod.delta.s[:, None] * w)
    path = tinylora.save(model, tmp_path / "rs.safetensors")
    fresh = make_model("qwen2", seed=1)
    tinylora.load(fresh, path)
    assert torch.equal(logits(fresh, x), adapted)
    with tinylora.merged(fresh):
        torch.testing.assert_close(logits(fresh, x), adapted, rtol=1e-5, atol=1e-5)
    from tinylora.trainers.config import TrainConfig

    assert TrainConfig(adapter={"method": "rowscale"}).learning_rate() == 1e-3  # its default lr
    with pytest.raises(ValueError, match="not low-rank"):
        tinylora.export(fresh, tmp_path / "lora", format="peft-lora")


def test_registration_checks_the_name():
    with pytest.raises(ValueError, match="config class for 'tinylora'"):
        methods.register(methods.Method("other", tinylora.TinyLoRAConfig, None, None, None, default_lr=1.0))
