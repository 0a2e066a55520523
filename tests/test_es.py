"""ES end to end: it learns the coin flip (both methods), resumes exactly, and its maths is the textbook one."""

import json
import math
import pickle

import pytest
import torch

import tinylora
from tinylora.trainers.config import ESConfig, TrainConfig
from tinylora.trainers import make_trainer
from tinylora.trainers.base import format_report
from tinylora.trainers.es import ESTrainer, antithetic_gradient, centred_ranks
from test_grpo_train import cfg_for, reward_probability, tiny_run_setup  # noqa: F401  (fixture)


def es_cfg(root, tmp_path, method, **kw):
    es = {"method": method, "sigma": 0.5, "samples": 8, "eval_every": 0, "keep_best": False,
          "population": 8 if method == "openai" else None, "eval_limit": 6, **kw.pop("es", {})}
    return cfg_for(root, algo="es", es=es, out_dir=str(tmp_path / "run"), **kw)


def rows_of(root):
    return [json.loads(line) for line in (root / "prompts.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("method", ["openai", "cma"])
def test_es_learns_a_coin_flip(tiny_run_setup, tmp_path, method):
    cfg = es_cfg(tiny_run_setup, tmp_path, method, steps=25)
    trainer = make_trainer(cfg, progress=False)
    assert isinstance(trainer, ESTrainer) and tinylora.num_trainable(trainer.model) == 1
    base = {k: v.clone() for k, v in trainer.model.state_dict().items() if not k.startswith("tinylora.")}
    start = reward_probability(trainer.model, trainer.tokenizer, rows_of(tiny_run_setup))
    assert 0.4 < start < 0.6
    trainer.train()
    end = reward_probability(trainer.model, trainer.tokenizer, rows_of(tiny_run_setup))
    assert end >= 0.9, (start, end)
    metrics = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert {"fitness_mean", "fitness_max", "fitness_std", "sigma", "step_norm", "adapter"} <= set(metrics[0])
    assert sum(m["fitness_mean"] for m in metrics[-5:]) / 5 >= 0.85
    after = trainer.model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in base.items())  # base weights bit-identical
    assert not any(p.grad is not None and method == "cma" for p in trainer.params)  # CMA: no gradients at all
    assert "mean fitness per step:" in format_report(json.loads((tmp_path / "run" / "summary.json").read_text()))


def test_centred_ranks_share_ties_and_span_half():
    assert centred_ranks(torch.tensor([0.1, 0.5, 0.3])).tolist() == [-0.5, 0.5, 0.0]
    # four values, two tied at the top: ranks 0, 1, 2.5, 2.5 of 3
    r = centred_ranks(torch.tensor([0.0, 0.2, 1.0, 1.0])).tolist()
    assert r == pytest.approx([-0.5, 1 / 3 - 0.5, 2.5 / 3 - 0.5, 2.5 / 3 - 0.5])
    assert centred_ranks(torch.tensor([0.7, 0.7])).tolist() == [0.0, 0.0]


def test_antithetic_gradient_by_hand():
    eps = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    shaped = torch.tensor([0.5, -0.5, 0.0, 0.25], dtype=torch.float64)  # pair 0: +1 better; pair 1: − better
    g = antithetic_gradient(shaped, eps, sigma=0.5)
    assert g.tolist() == pytest.approx([(1.0 * 1) / (2 * 2 * 0.5), (-0.25 * 2) / (2 * 2 * 0.5)])


def test_es_config_is_checked_before_anything_slow():
    with pytest.raises(ValueError, match="even"):
        TrainConfig(algo="es", es={"population": 7})
    with pytest.raises(ValueError, match="tinylora or lora_xs"):
        TrainConfig(algo="es", adapter={"method": "lora", "r": 1})
    with pytest.raises(ValueError, match="unknown es key"):
        TrainConfig(algo="es", es={"sigma": 0.1, "simga": 2})
    assert ESConfig(method="cma").members(13) == 4 + int(3 * math.log(13)) == 11  # pycma's default at n = 13
    cfg = TrainConfig(algo="es", es={"method": "cma"})
    assert TrainConfig.from_dict(__import__("yaml").safe_load(cfg.to_yaml())) == cfg  # defaults filled, round trip


@pytest.mark.parametrize("method", ["openai", "cma"])
def test_es_resume_gives_the_uninterrupted_run(tiny_run_setup, tmp_path, method):
    full = make_trainer(es_cfg(tiny_run_setup, tmp_path / "a", method, steps=6,
                               es={"eval_every": 2, "keep_best": True}), progress=False)
    full.train()
    # the same run stopped after 3 steps (checkpoint), then resumed by a fresh trainer
    part = make_trainer(es_cfg(tiny_run_setup, tmp_path / "b", method, steps=6, checkpoint_every=3,
                               es={"eval_every": 2, "keep_best": True}), progress=False)
    part.cfg.steps = 3
    part.train()
    resumed = make_trainer(es_cfg(tiny_run_setup, tmp_path / "b", method, steps=6, checkpoint_every=3,
                                  es={"eval_every": 2, "keep_best": True}), progress=False)
    resumed.train(resume=True)
    from tinylora.adapters.multi import flat_values

    scored = [m["select_accuracy"] for m in map(json.loads, (tmp_path / "a" / "run" / "metrics.jsonl").read_text()
                                                          .splitlines()) if "select_accuracy" in m]
    assert torch.equal(flat_values(full.model), full.best["values"])  # the run ends on the kept mean
    assert full.best["score"] >= max(scored)  # the best scored (the final mean is scored in finish)
    kept = json.loads((tmp_path / "a" / "run" / "summary.json").read_text())["es_kept"]
    assert kept["step"] in (0, 2, 4, 6) and "kept: the mean after step" in format_report(
        json.loads((tmp_path / "a" / "run" / "summary.json").read_text()))
    a = (tmp_path / "a" / "run" / "adapter.safetensors").read_bytes()
    b = (tmp_path / "b" / "run" / "adapter.safetensors").read_bytes()
    assert a == b
    ma = [json.loads(x) for x in (tmp_path / "a" / "run" / "metrics.jsonl").read_text().splitlines()]
    mb = [json.loads(x) for x in (tmp_path / "b" / "run" / "metrics.jsonl").read_text().splitlines()]
    strip = lambda ms: [{k: v for k, v in m.items() if k != "step_s"} for m in ms]  # noqa: E731
    assert strip(ma) == strip(mb)
    if method == "cma":
        state = pickle.loads((tmp_path / "b" / "run" / "ckpt-6" / "cma.pkl").read_bytes())
        assert state["es"].countiter == 6 and list(state["es"].mean) == list(resumed.cma.mean)
