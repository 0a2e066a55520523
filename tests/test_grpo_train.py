"""GRPO end to end on tiny models: it learns, touches only the adapter, and resumes exactly."""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch

import tinylora
from tinylora.trainers.config import TrainConfig
from tinylora.trainers.base import format_report
from tinylora.trainers.batch import build_batch
from tinylora.trainers.grpo import GRPOTrainer
from tinylora.toy.tokenizer import char_tokenizer
from conftest import make_model

CHARS = "abcdefghijklmnopqrstuvwxyz"


def ADAPTER():
    return tinylora.TinyLoRAConfig(u=1, tying="all", target_modules=["lm_head"])


def first_char_in_answer(completion, answer):
    """Reward 1 when the completion's first character is one of the answer's letters."""
    return float(len(completion) > 0 and completion[0] in answer)


@pytest.fixture(scope="module")
def tiny_run_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("grpo")
    tok = char_tokenizer(CHARS + " ")
    model = make_model("qwen2", vocab_size=len(tok), max_position_embeddings=256, seed=3, tie_word_embeddings=False)
    with torch.no_grad():  # only letters can be sampled: the specials get very low logits
        model.lm_head.weight[:4] = 0
        model.model.embed_tokens.weight[:4] = 0
        model.model.norm.weight.mul_(4)  # sharper logits (×4), as a trained model has
    model.config.eos_token_id = tok.eos_token_id
    model.save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    # A coin flip by construction. The adapter is one number v scaling a rank-2 update of the
    # output layer, so the logits move linearly in v along d = logits(v=1) − logits(v=0). The
    # rewarded letters of each prompt are those d favours most, taken until the untrained model
    # puts half of its probability on them: reward ≈ 0.5 at v = 0, and a large enough v (of the
    # right sign, which GRPO must find) makes it ≈ 1.
    probe = make_model("qwen2", vocab_size=len(tok), max_position_embeddings=256, seed=3, tie_word_embeddings=False)
    probe.load_state_dict(model.state_dict())
    tinylora.attach(probe, ADAPTER())
    rows = []
    for p in ["ab", "cd", "ef", "gh", "ij", "kl"]:
        x = torch.tensor([tok(p, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            probs = probe(x).logits[0, -1].softmax(-1)
            probe.tinylora.v[0].fill_(1.0)
            d = probe(x).logits[0, -1] - model(x).logits[0, -1]
            probe.tinylora.v[0].fill_(0.0)
        letters = sorted(CHARS, key=lambda c: -float(d[tok.convert_tokens_to_ids(c)]))
        chosen, mass = "", 0.0
        for c in letters:
            if mass >= 0.5:
                break
            chosen, mass = chosen + c, mass + float(probs[tok.convert_tokens_to_ids(c)])
        rows.append({"prompt": p, "answer": chosen})
    (root / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def cfg_for(root, **kw):
    base = dict(model=str(root / "model"), task="jsonl",
                task_args={"path": str(root / "prompts.jsonl"), "reward": "test_grpo_train:first_char_in_answer"},
                adapter=ADAPTER().to_dict(), steps=30, prompts_per_step=4,
                group_size=8, max_new_tokens=1, lr=0.3, warmup_steps=0, eval_before=False, eval_limit=6,
                eval_max_new_tokens=1, checkpoint_every=0, out_dir=str(root / "run"))
    base.update(kw)
    return TrainConfig(**base)


def reward_probability(model, tok, rows):
    """Exact probability that the first sampled letter is rewarded, averaged over prompts."""
    total = 0.0
    with torch.no_grad():
        for r in rows:
            x = torch.tensor([tok(r["prompt"], add_special_tokens=False)["input_ids"]])
            p = model(x).logits[0, -1].softmax(-1)
            total += sum(float(p[tok.convert_tokens_to_ids(c)]) for c in r["answer"])
    return total / len(rows)


def test_single_parameter_grpo_learns_a_coin_flip(tiny_run_setup, tmp_path):
    cfg = cfg_for(tiny_run_setup, out_dir=str(tmp_path / "run"))
    trainer = GRPOTrainer(cfg, progress=False)
    rows = [json.loads(line) for line in (tiny_run_setup / "prompts.jsonl").read_text().splitlines()]
    base = {k: v.clone() for k, v in trainer.model.state_dict().items() if not k.startswith("tinylora.")}
    assert tinylora.num_trainable(trainer.model) == 1
    start = reward_probability(trainer.model, trainer.tokenizer, rows)
    assert 0.4 < start < 0.6  # a coin flip by construction
    trainer.train()
    rewards = [json.loads(line)["reward_mean"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert sum(rewards[-5:]) / 5 >= 0.9, rewards
    assert reward_probability(trainer.model, trainer.tokenizer, rows) >= 0.9
    after = trainer.model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in base.items())  # base weights bit-identical
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    png = (tmp_path / "run" / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    report = format_report(summary)
    line = next(x for x in report.splitlines() if x.startswith("reward per step:"))
    spark = line.split(":", 1)[1].strip()
    assert len(spark) == 30 and spark[0] in "▁▂▃▄" and spark[-1] in "▆▇█"  # the learning, drawn
    assert "batch accuracy per step" not in report  # a 0/1 reward's mean is the batch accuracy: drawn once


def test_build_batch_layout():
    b = build_batch([[5, 6, 7], [8]], [[1, 2], [3, 4, 9]], pad_id=0)
    assert b.input_ids.tolist() == [[5, 6, 7, 1, 2], [0, 8, 3, 4, 9]]
    assert b.targets.tolist() == [[7, 1, 2], [3, 4, 9]] and b.mask.tolist() == [[0, 1, 1], [1, 1, 1]]
    assert b.position_ids.tolist() == [[0, 1, 2, 3, 4], [0, 0, 1, 2, 3]]


def adapted_model(arch, seed):
    """A random model of ``arch`` with a 13-parameter adapter set away from zero; (model, trained params)."""
    model = make_model(arch, seed=seed)
    tinylora.attach(model, tinylora.TinyLoRAConfig(u=13, tying="structured", n_tie=2))
    params = [p for p in model.parameters() if p.requires_grad]
    with torch.no_grad():
        for p in params:
            p.normal_(0, 0.3, generator=torch.Generator().manual_seed(5))
    return model, params


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_shared_prompt_forward_equals_the_padded_batch(arch):
    """Each prompt run once for its group: the same log-probs, mask, loss and adapter gradient as the
    left-padded batch of every sample (fp32, 1e-5), with groups of unequal completion lengths, a
    one-token completion and a prompt that appears in two groups."""
    from tinylora.trainers.batch import completion_logprobs, shared_prompt_logprobs
    from tinylora.trainers.losses import policy_loss

    model, params = adapted_model(arch, seed=1)
    g = torch.Generator().manual_seed(0)
    rand = lambda n: torch.randint(1, 120, (n,), generator=g).tolist()  # noqa: E731
    p1, p2 = rand(11), rand(4)
    prompts = [p1, p1, p1, p2, p2, p1, p1]
    comps = [rand(n) for n in (5, 1, 9, 3, 7, 2, 6)]
    adv = torch.tensor([1.0, -0.5, 0.3, 2.0, -1.0, 0.7, -0.2])
    b = build_batch(prompts, comps, pad_id=0)

    def loss_and_grad(logp, mask):
        loss, _ = policy_loss(logp, logp.detach(), adv, mask, clip_low=0.2, clip_high=0.4, total_tokens=float(mask.sum()),
                              num_seqs=7)
        return loss, torch.autograd.grad(loss, params)

    lp_ref = completion_logprobs(model, b, temperature=0.7)
    lp, mask = shared_prompt_logprobs(model, prompts, comps, temperature=0.7)
    assert torch.equal(mask, b.mask)
    assert (lp - lp_ref).mul(mask).abs().max() < 1e-5 and lp.mul(1 - mask).abs().max() == 0
    (l_ref, g_ref), (l_sh, g_sh) = loss_and_grad(lp_ref, b.mask), loss_and_grad(lp, mask)
    assert abs(l_ref.item() - l_sh.item()) < 1e-5
    assert all(torch.allclose(a, c, atol=1e-5, rtol=1e-5) for a, c in zip(g_ref, g_sh))
    assert max(float(a.abs().max()) for a in g_ref) > 1e-3  # the gradient is not trivially zero


def test_a_grpo_step_with_shared_prompts_gives_the_same_adapter(tiny_run_setup, tmp_path):
    out = {}
    for shared in (False, True):
        cfg = cfg_for(tiny_run_setup, steps=3, max_new_tokens=4, shared_prompt=shared, micro_batch_size=5,
                      out_dir=str(tmp_path / f"run{shared}"))
        GRPOTrainer(cfg, progress=False).train()
        out[shared] = tinylora.read(tmp_path / f"run{shared}" / "adapter.safetensors").tensors
    a, b = out[False], out[True]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), (k, a[k], b[k])
    assert any(a[k].abs().max() > 0 for k in a)


class ShiftedLogprobs:
    """Our rollout backend whose reported log-probs are the true ones minus ``shift``: a rollout engine
    whose probabilities are e^shift times too small on every token, as a mismatched engine would be."""

    def __init__(self, model, tokenizer, shift):
        from tinylora.generation.rollout import LocalBackend

        self.inner, self.shift = LocalBackend(model, tokenizer, engine="tinylora"), shift

    def update(self, model):
        self.inner.update(model)

    def generate(self, prompts, n, sampling, seeds):
        ro = self.inner.generate(prompts, n, sampling, seeds)
        ro.logprobs = [[x - self.shift for x in lp] for lp in ro.logprobs]
        return ro


def _one_step(root, tmp_path, name, shift=None, **kw):
    cfg = cfg_for(root, steps=1, max_new_tokens=3, lr=1e-9, out_dir=str(tmp_path / name), **kw)
    trainer = GRPOTrainer(cfg, progress=False)
    if shift is not None:
        trainer.backend = ShiftedLogprobs(trainer.model, trainer.tokenizer, shift)
    trainer.train()
    return json.loads((tmp_path / name / "metrics.jsonl").read_text().splitlines()[0])


def test_the_rollout_log_prob_gap_is_measured_and_tis_corrects_it(tiny_run_setup, tmp_path):
    import math

    ours = _one_step(tiny_run_setup, tmp_path, "ours")
    assert ours["rollout_lp_gap"] < 1e-5  # our engine on fp32 merged weights: the trainer's own numbers
    shifted = _one_step(tiny_run_setup, tmp_path, "shifted", shift=math.log(3))
    # every token's gap is log 3: the rollout log-probs sit on the tokens they belong to
    assert shifted["rollout_lp_gap"] == pytest.approx(math.log(3), abs=1e-5)
    assert shifted["rollout_lp_gap_max"] == pytest.approx(math.log(3), abs=1e-5)
    assert shifted["grad_norm"] == pytest.approx(ours["grad_norm"], rel=1e-5)  # no correction asked for
    tis = _one_step(tiny_run_setup, tmp_path, "tis", shift=math.log(3), tis_cap=2.0)
    # π/π_rollout = 3 on every token, truncated at 2: the gradient is exactly twice the uncorrected one
    assert tis["tis_capped_share"] == pytest.approx(1.0)
    assert tis["grad_norm"] == pytest.approx(2 * ours["grad_norm"], rel=1e-5)
    mild = _one_step(tiny_run_setup, tmp_path, "mild", shift=math.log(1.5), tis_cap=2.0)
    assert mild["grad_norm"] == pytest.approx(1.5 * ours["grad_norm"], rel=1e-5) and mild["tis_capped_share"] == 0


def test_tis_cap_below_one_is_refused():
    with pytest.raises(ValueError, match="tis_cap"):
        TrainConfig(tis_cap=0.5)


@pytest.mark.parametrize("algo", ["grpo", "es-cma"])
def test_resume_after_kill_gives_the_same_adapter(tiny_run_setup, tmp_path, algo):
    """kill -9 mid-run, --resume: the adapter bytes of the uninterrupted run (ES: CMA-ES's pickled state too)."""
    args = lambda out: [sys.executable, "-m", "tinylora", "train", "--config", str(tmp_path / "c.yaml"),  # noqa: E731
                        f"out_dir={out}"]
    extra = ({} if algo == "grpo" else
             {"algo": "es", "es": {"method": "cma", "sigma": 0.5, "samples": 8, "eval_every": 3, "eval_limit": 6}})
    cfg_for(tiny_run_setup, steps=8, checkpoint_every=2, **extra).to_yaml(tmp_path / "c.yaml")
    env = {**os.environ, "PYTHONPATH": os.path.dirname(__file__) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    subprocess.run(args(tmp_path / "full"), check=True, env=env, capture_output=True)

    metrics = tmp_path / "killed" / "metrics.jsonl"
    # the run SIGKILLs itself right after logging step 4 (0-based): after ckpt-4, before ckpt-6
    died = subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "die_after_step.py"), "4",
                           *args(tmp_path / "killed")[3:]], env=env, capture_output=True)
    assert died.returncode == -signal.SIGKILL, died.stderr[-2000:]
    assert len(metrics.read_text().splitlines()) == 5 and (tmp_path / "killed" / "ckpt-4").is_dir()
    assert not (tmp_path / "killed" / "adapter.safetensors").exists()  # it really died mid-run
    resumed = subprocess.run([sys.executable, "-m", "tinylora", "train", "--resume", str(tmp_path / "killed")],
                             env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    full = (tmp_path / "full" / "adapter.safetensors").read_bytes()
    assert (tmp_path / "killed" / "adapter.safetensors").read_bytes() == full
    steps = [json.loads(x)["step"] for x in metrics.read_text().splitlines()]
    assert steps == list(range(8))  # no step logged twice


def test_config_round_trip_and_overrides(tmp_path):
    from tinylora.trainers.config import apply_overrides

    cfg = TrainConfig()
    cfg.to_yaml(tmp_path / "c.yaml")
    assert TrainConfig.from_yaml(tmp_path / "c.yaml") == cfg
    c2 = TrainConfig.from_yaml(tmp_path / "c.yaml", ["steps=7", "adapter.u=4", "lr=0.5"])
    assert c2.steps == 7 and c2.adapter["u"] == 4 and c2.learning_rate() == 0.5
    with pytest.raises(ValueError, match="unknown config key"):
        TrainConfig.from_dict(apply_overrides(cfg.to_dict(), ["stepz=3"]))
    with pytest.raises(ValueError, match="loss_aggregation"):
        TrainConfig(loss_aggregation="sum")
    with pytest.raises(ValueError, match="u must be"):
        TrainConfig.from_dict(apply_overrides(cfg.to_dict(), ["adapter.u=0"]))


def test_config_numbers_written_like_1e_2_are_numbers(tmp_path):
    # YAML 1.1 reads 1e-2 (no dot) as a string; a user writing lr=1e-2 means a number.
    from tinylora.trainers.config import apply_overrides

    c = TrainConfig.from_dict(apply_overrides({}, ["lr=1e-2", "temperature=1", "steps=3"]))
    assert c.lr == 0.01 and type(c.temperature) is float and c.steps == 3
    (tmp_path / "c.yaml").write_text("lr: 3e-3\nclip_high: 4e-1\n")
    c = TrainConfig.from_yaml(tmp_path / "c.yaml")
    assert c.lr == 0.003 and c.clip_high == 0.4
    for bad, field in (("lr=fast", "lr"), ("steps=abc", "steps"), ("eval_limit=2.5", "eval_limit"),
                       ("steps=1e3", "steps")):
        with pytest.raises(ValueError, match=f"^{field} must be"):
            TrainConfig.from_dict(apply_overrides({}, [bad]))


def test_shipped_toy_config_is_the_default():
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "configs" / "toy-grpo.yaml"
    assert TrainConfig.from_yaml(path) == TrainConfig()
    assert path.read_text().startswith("# tinylora train --config configs/toy-grpo.yaml")


def _train(*argv):
    from tinylora.cli.main import main

    return main(["train", *argv])


def test_a_resume_cannot_change_the_run_but_can_extend_it(tiny_run_setup, tmp_path, capsys):
    """--resume RUN lr=0.5 rewrote config.yaml; algo=sft turned GRPO into SFT midway. Now only steps=N
    (N ≥ the recorded steps) is taken, and the record says where each stretch began."""
    cfg_for(tiny_run_setup, steps=4, checkpoint_every=10, lr=None).to_yaml(tmp_path / "c.yaml")
    run = tmp_path / "run"
    assert _train("--config", str(tmp_path / "c.yaml"), f"out_dir={run}") == 0
    assert (run / "latest").read_text() == "ckpt-4"  # shorter than checkpoint_every: still extendable
    recorded = (run / "config.yaml").read_bytes()
    capsys.readouterr()
    for argv, named in [(["lr=0.5"], "lr=0.5"), (["algo=sft", "steps=6"], "algo=sft"), (["steps=3"], "only extend"),
                        (["steps=six"], "only extend"), (["--model", "toy"], "--model"), (["--algo", "sft"], "--algo"),
                        (["--config", str(tmp_path / "c.yaml")], "--config")]:
        assert _train("--resume", str(run), *argv) == 2, argv
        err = capsys.readouterr().err
        assert named in err and len(err.strip().splitlines()) == 1, (argv, err)
        assert (run / "config.yaml").read_bytes() == recorded  # nothing of the record changed
    resolved = json.loads((run / "resolved.json").read_text())
    assert resolved["requested"]["lr"] is None and resolved["resolved"]["lr"] == 1e-2  # tinylora's default
    assert resolved["requested"]["device"] == "auto" and resolved["resolved"]["device"] == "cpu"
    assert resolved["resolved"]["rollout_engine"] == "tinylora" and len(resolved["stretches"]) == 1
    from tinylora._core.memory import keep_freed_memory

    assert resolved["stretches"][0]["allocator"] == keep_freed_memory()  # the policy the run had, on record

    assert _train("--resume", str(run), "steps=6") == 0
    resolved = json.loads((run / "resolved.json").read_text())
    assert [(s["from_step"], s["steps"]) for s in resolved["stretches"]] == [(0, 4), (4, 6)]
    assert TrainConfig.from_yaml(run / "config.yaml").steps == 6
    assert [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()] == list(range(6))
    # extended exactly: the adapter of a run configured for 6 steps from the start
    assert _train("--config", str(tmp_path / "c.yaml"), f"out_dir={tmp_path / 'six'}", "steps=6") == 0
    assert (run / "adapter.safetensors").read_bytes() == (tmp_path / "six" / "adapter.safetensors").read_bytes()

    cfg_for(tiny_run_setup, steps=4, schedule="cosine").to_yaml(tmp_path / "cos.yaml")
    (tmp_path / "cos").mkdir()
    (tmp_path / "cos" / "config.yaml").write_bytes((tmp_path / "cos.yaml").read_bytes())
    (tmp_path / "cos" / "latest").write_text("ckpt-4")
    assert _train("--resume", str(tmp_path / "cos"), "steps=8") == 2
    assert "cosine" in capsys.readouterr().err


def test_run_directory_checks_come_before_the_model_loads(tmp_path, capsys):
    cfg = TrainConfig(model=str(tmp_path / "no-such-model"), out_dir=str(tmp_path / "run"))
    (tmp_path / "run").mkdir()
    cfg.to_yaml(tmp_path / "run" / "config.yaml")  # a run that died before its first checkpoint
    assert _train("--resume", str(tmp_path / "run")) == 2
    err = capsys.readouterr().err
    assert "no checkpoint to resume from" in err and "cannot load model" not in err
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("mine")
    assert _train(f"out_dir={mine}", f"model={tmp_path / 'no-such-model'}") == 2
    assert "not a tinylora run (thesis.tex)" in capsys.readouterr().err
    assert sorted(p.name for p in mine.iterdir()) == ["thesis.tex"]


def test_the_method_can_be_switched_on_the_command_line():
    from tinylora.trainers.config import apply_overrides

    def cfg(*o):
        return TrainConfig.from_dict(apply_overrides(TrainConfig().to_dict(), list(o)))

    lora = cfg("adapter.method=lora", "steps=1")  # was: unknown field(s) ['budget', 'n_tie', 'tying', 'u']
    assert lora.adapter["method"] == "lora" and "u" not in lora.adapter and lora.adapter_config().r == 2
    assert cfg("adapter.r=1", "adapter.method=lora").adapter_config().r == 1  # either order
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['u'\] for method 'lora'"):
        cfg("adapter.method=lora", "adapter.u=4")  # set on purpose: still an error
    assert cfg("adapter.method=tinylora", "adapter.u=4").adapter["u"] == 4  # no switch: nothing dropped


def test_tensorboard_gets_the_same_scalars_as_metrics_jsonl(tiny_run_setup, tmp_path):
    """report_to: [tensorboard] — read back with tensorboard's own reader: every step's scalars, ‖v‖,
    the final evaluation and the curves image; metrics.jsonl is still written and agrees."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = cfg_for(tiny_run_setup, steps=5, out_dir=str(tmp_path / "run"), report_to=["jsonl", "tensorboard"])
    GRPOTrainer(cfg, progress=False).train()
    acc = EventAccumulator(str(tmp_path / "run" / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    metrics = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    for key in ("reward_mean", "accuracy", "lr", "grad_norm", "loss"):
        events = acc.Scalars(key)
        assert [e.step for e in events] == [m["step"] for m in metrics] == [0, 1, 2, 3, 4]  # as in the jsonl
        assert [e.value for e in events] == pytest.approx([m[key] for m in metrics], rel=1e-6)
    norms = [e.value for e in acc.Scalars("adapter_norm")]
    assert norms[-1] == pytest.approx(abs(json.loads((tmp_path / "run" / "summary.json").read_text())["values"][0]),
                                      rel=1e-5)
    assert acc.Scalars("eval_after/accuracy")[0].step == 5 and "curves" in acc.Tags()["images"]


def test_a_logger_that_is_not_installed_is_one_line_before_the_model_loads(tiny_run_setup, tmp_path, monkeypatch):
    import importlib.util

    from tinylora._core.errors import TinyLoRAError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    cfg = cfg_for(tiny_run_setup, model=str(tmp_path / "no-model"), report_to=["wandb"])
    with pytest.raises(TinyLoRAError, match=r"pip install 'tinylora\[wandb\]'"):
        GRPOTrainer(cfg, progress=False)
    with pytest.raises(ValueError, match="unknown logger"):
        cfg_for(tiny_run_setup, report_to=["tensorbored"])


def _wandb_records(path):
    """The records of an offline run's .wandb file (LevelDB log blocks of protobuf Records, after a
    7-byte header), parsed with wandb's own message classes; wandb 0.31 ships no Python reader."""
    import struct

    from wandb.proto import wandb_internal_pb2 as pb

    raw, pos, buf = path.read_bytes(), 7, b""
    while pos + 7 <= len(raw):
        left = 32768 - pos % 32768
        crc, n, kind = struct.unpack("<IHB", raw[pos:pos + 7]) if left >= 7 else (0, 0, 0)
        if n == 0 and kind == 0:
            pos += left
            continue
        data, pos = raw[pos + 7:pos + 7 + n], pos + 7 + n
        buf = data if kind in (1, 2) else buf + data
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(buf)
            yield rec


def test_wandb_offline_gets_the_run(tiny_run_setup, tmp_path, monkeypatch):
    """report_to: [wandb] with WANDB_MODE=offline (no network here): the offline run holds the config,
    every step's scalars and the final evaluation."""
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = cfg_for(tiny_run_setup, steps=3, out_dir=str(tmp_path / "run"), report_to=["wandb"])
    summary = GRPOTrainer(cfg, progress=False).train()
    (run_file,) = (tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb")
    recs = list(_wandb_records(run_file))
    config = {u.key: json.loads(u.value_json) for r in recs if r.HasField("run") for u in r.run.config.update}
    assert config["steps"] == 3 and config["adapter.u"] == 1
    history = [{i.nested_key[0] if i.nested_key else i.key: json.loads(i.value_json) for i in r.history.item}
               for r in recs if r.HasField("history")]
    metrics = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [h for h in history if "reward_mean" in h]
    assert [h["reward_mean"] for h in steps] == pytest.approx([m["reward_mean"] for m in metrics])
    final = {u.key: json.loads(u.value_json) for r in recs if r.HasField("summary") for u in r.summary.update}
    assert final["eval_after/accuracy"] == summary["accuracy_after"]


def test_dtype_auto_is_resolved_on_this_machine_and_recorded(tiny_run_setup, tmp_path):
    from tinylora._core.dtypes import resolve_dtype

    cfg = cfg_for(tiny_run_setup, steps=1, dtype="auto", out_dir=str(tmp_path / "run"))
    GRPOTrainer(cfg, progress=False).train()
    rec = json.loads((tmp_path / "run" / "resolved.json").read_text())
    assert rec["requested"]["dtype"] == "auto"
    assert rec["resolved"]["dtype"] == resolve_dtype("auto", "cpu")[0] and rec["resolved"]["dtype_why"]
    with pytest.raises(ValueError, match="dtype must be one of fp32, bf16, fp16, auto"):
        TrainConfig(dtype="fp8")


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_the_chunked_head_gives_the_log_probs_and_gradient_of_the_whole_one(arch, temperature):
    """The head made a few positions at a time, forward and backward (``chunk_rows``), against the logits
    made at once (``chunk_rows=0``): the same log-probs, loss and adapter gradient in fp32 (1e-5)."""
    from tinylora.trainers.batch import _chunkable_head, completion_logprobs
    from tinylora.trainers.losses import policy_loss

    model, params = adapted_model(arch, seed=2)
    assert _chunkable_head(model) is not None  # the chunked path is the one under test
    g = torch.Generator().manual_seed(1)
    rand = lambda n: torch.randint(1, 120, (n,), generator=g).tolist()  # noqa: E731
    prompts = [rand(n) for n in (7, 3, 9, 5)]
    comps = [rand(n) for n in (6, 1, 8, 4)]
    adv = torch.tensor([1.0, -0.5, 0.3, 2.0])
    b = build_batch(prompts, comps, pad_id=0)

    def run(chunk):
        lp = completion_logprobs(model, b, temperature=temperature, chunk_rows=chunk)
        loss, _ = policy_loss(lp, lp.detach(), adv, b.mask, clip_low=0.2, clip_high=0.4,
                              total_tokens=float(b.mask.sum()), num_seqs=4)
        return lp, loss, torch.autograd.grad(loss, params)

    lp0, l0, g0 = run(0)
    for chunk in (3, 32, None):  # chunks that split rows, one chunk, the default
        lp, loss, grads = run(chunk)
        assert (lp - lp0).mul(b.mask).abs().max() < 1e-5
        assert abs(loss.item() - l0.item()) < 1e-5
        assert all(torch.allclose(a, c, atol=1e-5, rtol=1e-5) for a, c in zip(g0, grads))
    assert max(float(a.abs().max()) for a in g0) > 1e-3
