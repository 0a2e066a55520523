"""SFT: the loss sees completion tokens only, it learns, it trains on own correct samples, it resumes."""

import json

import pytest
import torch

import tinylora
from tinylora.trainers.sft import SFTTrainer, sft_loss
from tinylora.trainers.config import TrainConfig
from tinylora.trainers import make_trainer
from tinylora.trainers.batch import build_batch
from tinylora.trainers.grpo import GRPOTrainer
from tinylora.toy.tokenizer import char_tokenizer
from conftest import make_model
from test_grpo_train import cfg_for, reward_probability, tiny_run_setup  # noqa: F401  (fixture)


def test_sft_loss_masks_prompt_tokens_by_hand():
    model = make_model("qwen2", vocab_size=32, seed=1)
    prompts, completions = [[5, 6, 7], [8]], [[9, 10, 2], [11, 12, 13, 2]]
    batch = build_batch(prompts, completions, pad_id=0)
    expected, n = 0.0, 0
    with torch.no_grad():
        for p, c in zip(prompts, completions):  # each sequence alone, unpadded
            lp = model(torch.tensor([p + c])).logits[0].log_softmax(-1)
            for k, tok in enumerate(c):  # token c[k] is predicted at position len(p) + k − 1
                expected -= float(lp[len(p) + k - 1, tok])
                n += 1
        got = float(sft_loss(model, batch))
        assert got == pytest.approx(expected / n, rel=1e-5)
        # prompt tokens carry no loss: changing them changes the conditioning, not what is summed
        assert batch.mask.sum() == n == 7
        # a global normaliser (micro-batches) gives the same sum
        halves = [build_batch(prompts[i:i + 1], completions[i:i + 1], 0) for i in range(2)]
        total = sum(float(sft_loss(model, b, total_tokens=n)) for b in halves)
        assert total == pytest.approx(expected / n, rel=1e-5)


@pytest.fixture(scope="module")
def memorise_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("sft")
    tok = char_tokenizer("abcdefghijklmnopqrstuvwxyz ")
    model = make_model("qwen2", vocab_size=len(tok), max_position_embeddings=128, seed=5)
    with torch.no_grad():
        model.model.norm.weight.mul_(4)  # room for sharp logits: the adapter cannot touch the output layer
    model.config.eos_token_id = tok.eos_token_id
    model.save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    rows = [{"prompt": p, "answer": s, "solution": s} for p, s in
            [("ab", "xyz"), ("cd", "qrs"), ("ef", "mno"), ("gh", "uvw")]]
    (root / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def sft_cfg(root, **kw):
    base = dict(model=str(root / "model"), task="jsonl", task_args={"path": str(root / "data.jsonl")},
                algo="sft", adapter={"method": "lora", "r": 8, "alpha": 16.0}, steps=60, prompts_per_step=4,
                micro_batch_size=3, lr=1e-2, warmup_steps=0, eval_before=True, eval_limit=4, eval_batch_size=4,
                eval_max_new_tokens=4, checkpoint_every=0, out_dir=str(root / "run"))
    base.update(kw)
    return TrainConfig(**base)


def test_sft_learns_the_reference_solutions(memorise_setup, tmp_path):
    trainer = SFTTrainer(sft_cfg(memorise_setup, out_dir=str(tmp_path / "run")), progress=False)
    trained = {id(p) for p in tinylora.trainable_parameters(trainer.model)}
    base = {k: v.detach().clone() for k, v in trainer.model.named_parameters() if id(v) not in trained}
    assert base and len(base) < len(list(trainer.model.parameters()))
    summary = trainer.train()
    losses = [json.loads(x)["loss"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert losses[-1] < 0.2 * losses[0], losses
    assert summary["accuracy_before"] == 0.0 and summary["accuracy_after"] == 1.0
    assert summary["curve"] == "loss" and summary["algo"] == "sft"
    after = dict(trainer.model.named_parameters())
    assert all(torch.equal(after[k], v) for k, v in base.items())  # only the adapter moved


def test_sft_resume_gives_the_same_adapter(memorise_setup, tmp_path):
    full = SFTTrainer(sft_cfg(memorise_setup, steps=6, eval_before=False, out_dir=str(tmp_path / "a")), progress=False)
    full.train()
    first = SFTTrainer(sft_cfg(memorise_setup, steps=3, checkpoint_every=3, eval_before=False,
                               out_dir=str(tmp_path / "b")), progress=False)
    first.train()
    resumed = SFTTrainer(sft_cfg(memorise_setup, steps=6, eval_before=False, out_dir=str(tmp_path / "b")),
                         progress=False)
    resumed.train(resume=True)
    assert (tmp_path / "a" / "adapter.safetensors").read_bytes() == (tmp_path / "b" / "adapter.safetensors").read_bytes()
    again = SFTTrainer(sft_cfg(memorise_setup, steps=6, eval_before=False, out_dir=str(tmp_path / "a")), progress=False)
    with pytest.raises(ValueError, match="already holds a run"):  # a finished run is never appended to
        again.train()


def test_rejection_sft_trains_on_own_correct_samples(tiny_run_setup, tmp_path):  # noqa: F811
    # the coin-flip task of the GRPO test: keeping only rewarded samples must raise the reward too
    cfg = cfg_for(tiny_run_setup, algo="sft", sft_source="rejection", out_dir=str(tmp_path / "run"), steps=30)
    trainer = make_trainer(cfg, progress=False)
    assert isinstance(trainer, SFTTrainer)
    rows = [json.loads(x) for x in (tiny_run_setup / "prompts.jsonl").read_text().splitlines()]
    assert 0.4 < reward_probability(trainer.model, trainer.tokenizer, rows) < 0.6
    trainer.train()
    metrics = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(m["sequences"] == round(m["kept"] * 4 * 8) for m in metrics)  # trained on exactly the kept ones
    assert reward_probability(trainer.model, trainer.tokenizer, rows) >= 0.8


def test_trainer_refuses_the_wrong_algo(memorise_setup):
    with pytest.raises(ValueError, match="algo='grpo'"):
        GRPOTrainer(sft_cfg(memorise_setup), progress=False)
    with pytest.raises(ValueError, match="sft_source"):
        sft_cfg(memorise_setup, sft_source="mine")
