import pytest

import tinylora
from tinylora.adapters.config import config_from_dict, config_from_yaml


@pytest.mark.parametrize("cfg", [
    tinylora.TinyLoRAConfig(r=2, u=13, tying="all", seed=3),
    tinylora.TinyLoRAConfig(u=1, tying="tiled", n_tie=16, target_modules=["q_proj"]),
    tinylora.TinyLoRAConfig(u=4, tying="structured", budget=40),
    tinylora.LoRAConfig(r=4, alpha=8.0),
    tinylora.LoRAXSConfig(r=3),
    tinylora.FullConfig(target_modules=["c_attn"]),
])
def test_round_trip_json_yaml(cfg, tmp_path):
    assert config_from_dict(cfg.to_dict()) == cfg
    path = tmp_path / "c.yaml"
    cfg.to_yaml(path)
    assert config_from_yaml(path) == cfg
    assert config_from_yaml(cfg.to_yaml()) == cfg


@pytest.mark.parametrize("kwargs,match", [
    (dict(u=0), "u must be a positive integer"),
    (dict(r=-1), "r must be"),
    (dict(tying="blocks"), "tying must be one of"),
    (dict(tying="tiled"), "needs n_tie"),
    (dict(tying="all", n_tie=4), "n_tie only applies"),
    (dict(tying="tiled", n_tie=2, budget=26), "either n_tie or budget"),
    (dict(tying="tiled", u=13, budget=5), "smaller than one vector"),
])
def test_tinylora_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tinylora.TinyLoRAConfig(**kwargs)


def test_unknown_method_and_field():
    with pytest.raises(ValueError, match="unknown method"):
        config_from_dict({"method": "dora"})
    with pytest.raises(ValueError, match="unknown field"):
        config_from_dict({"method": "lora", "rank": 3})
