"""The CPU world: the arith generator, the char tokenizer, the shipped backbone, quick pretraining."""

import json

import torch

import pytest

from tinylora import tasks
from tinylora.tasks.arith_problems import ArithConfig, Problem, problems
from tinylora.toy.tokenizer import char_tokenizer


def test_generator_is_deterministic_and_seeded():
    a = [p.question for p in problems("train", 50, seed=3)]
    assert a == [p.question for p in problems("train", 50, seed=3)]
    assert a != [p.question for p in problems("train", 50, seed=4)]
    assert [p.key() for p in problems("train", 20, seed=3, offset=30)] == [p.key() for p in problems("train", 50, seed=3)][30:]


def test_splits_are_disjoint_by_construction():
    train = problems("train", 5000)
    test = problems("test", 500)
    assert not {p.key() for p in train} & {p.key() for p in test}
    assert not {p.question for p in train} & {p.question for p in test}
    assert all(p.split() == "test" for p in test) and all(p.split() == "train" for p in train)


def test_validation_split_is_held_out_and_leaves_test_unchanged():
    t = tasks.get("arith", n_test=300, n_val=200)
    val, test, train = t.load("validation"), t.load("test"), t.load("train")
    assert len(val) == 200 and all(e.id.startswith("validation-") for e in val)
    assert [e.question for e in test] == [p.question for p in problems("test", 300)]  # test is what it was
    assert not {e.question for e in val} & {e.question for e in test}
    assert not {e.question for e in val} & {e.question for e in train}
    assert all(p.split() == "test" for p in problems("test", 200, offset=300))  # never pretrained on


def test_problems_are_correct_and_within_knobs():
    cfg = ArithConfig(min_steps=2, max_steps=4)
    for p in problems("train", 2000, cfg=cfg):
        assert 2 <= len(p.ops) <= 4 and p.answer >= 0
        assert sum(op == "*" for op, _ in p.ops) <= 1
        v = p.start
        for op, x in p.ops:
            v = {"+": v + x, "-": v - x, "*": v * x}[op]
            assert v >= 0
        assert v == p.answer
        assert p.step().endswith(f"#### {p.answer}") and p.direct() == f"#### {p.answer}"
        assert p.verbose().endswith(f"\n#### {p.answer}") and "<<" in p.verbose()
    with pytest.raises(ValueError):
        ArithConfig(min_steps=3, max_steps=2)


def test_step_solution_by_hand():
    p = Problem("Tom", "apples", 12, [("+", 5), ("*", 2), ("-", 4)])
    assert p.answer == 30
    assert p.step() == "Step by step: 12+5=17. 17*2=34. 34-4=30. #### 30"
    assert p.question.startswith("Tom has 12 apples.") and p.question.endswith("How many apples does Tom have?")
    assert "Tom doubles them." in p.question


def test_arith_task_scores_like_gsm8k():
    t = tasks.get("arith", n_test=20)
    ex = t.load("test")
    assert len(ex) == 20 and all(e.id.startswith("test-") for e in ex)
    e = ex[0]
    assert t.prompt(e).startswith("Q: ") and t.prompt(e).endswith("\nA:")
    assert tasks.get("arith", forced=True).prompt(e).endswith("A: Step by step:")
    assert t.score(f" Step by step: 1+1=2. #### {e.answer}", e.answer) == 1
    assert t.score(f" #### {int(e.answer) + 1}", e.answer) == 0
    assert t.score(f" the answer is {e.answer}", e.answer) == 0  # strict: the format is part of the task
    assert "arith" in tasks.names()


def test_tokenizer_round_trip(tmp_path):
    tok = char_tokenizer()
    texts = [p.question + "\nA: " + p.step() for p in problems("test", 20)] + [p.verbose() for p in problems("test", 5)]
    for s in texts:
        ids = tok(s, add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids and len(ids) == len(s)
        assert tok.decode(ids) == s
    tok.save_pretrained(tmp_path)
    from transformers import AutoTokenizer

    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again.decode(again(texts[0], add_special_tokens=False)["input_ids"]) == texts[0]


def test_shipped_backbone_loads_and_generates():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tinylora.toy.backbone import shipped_path

    path = shipped_path()
    record = json.loads((path / "pretrain.json").read_text())
    assert record["command"].startswith("tinylora toy pretrain") and "seed" in record["config"]
    assert sum(f.stat().st_size for f in path.iterdir()) < 10 * 2**20
    model = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    prompt = tasks.get("arith", forced=True).prompt(tasks.get("arith", n_test=1).load("test")[0])
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False)
    out = model.generate(**ids, max_new_tokens=40, do_sample=False, pad_token_id=tok.pad_token_id,
                         eos_token_id=tok.eos_token_id)
    text = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "=" in text and "####" in text  # it continues in the step-by-step style it learned


def test_quick_pretraining_learns(tmp_path):
    from tinylora.toy.backbone import PretrainConfig, pretrain

    rec = pretrain(tmp_path / "q", PretrainConfig.quick(steps=120), progress=False)
    assert rec["final_loss"] < 0.45 * rec["first_loss"]
    assert (tmp_path / "q" / "config.json").exists() and (tmp_path / "q" / "tokenizer.json").exists()


def test_documents_keep_one_style_and_train_only_answers():
    from tinylora.toy.backbone import document, make_batch

    tok = char_tokenizer()
    ps = problems("train", 2)
    segs = document(ps, "step")
    text = "".join(t for t, _ in segs if t != "<eos>")
    assert text == f"Q: {ps[0].question}\nA: {ps[0].step()}\nQ: {ps[1].question}\nA: {ps[1].step()}"
    b = make_batch(tok, [segs])
    trained = tok.decode([int(t) for t in b["labels"][0] if t >= 0])
    assert trained == f" {ps[0].step()}\nQ: {ps[1].step()}<eos>"
    # an instruction opens the document as untrained context naming its style
    ins = make_batch(tok, [document(ps[:1], "direct", instruct=True)])
    assert tok.decode(ins["input_ids"][0]).startswith("Give only the answer.\nQ: ")
    assert tok.decode([int(t) for t in ins["labels"][0] if t >= 0]) == f" {ps[0].direct()}<eos>"
    # one problem per document is exactly the single-problem corpus: prompt untrained, answer + EOS trained
    one = make_batch(tok, [document(ps[:1], "direct")])
    assert tok.decode(one["input_ids"][0]) == f"Q: {ps[0].question}\nA: {ps[0].direct()}<eos>"
    assert tok.decode([int(t) for t in one["labels"][0] if t >= 0]) == f" {ps[0].direct()}<eos>"


def test_named_sizes_and_bad_configs():
    from tinylora.toy.backbone import SIZES, PretrainConfig, build_model

    tok = char_tokenizer()
    counts = {}
    for name in ("0.25M", "1M", "4M"):
        cfg = PretrainConfig.sized(name)
        assert (cfg.hidden_size, cfg.num_layers, cfg.num_heads) == SIZES[name]
        counts[name] = sum(p.numel() for p in build_model(tok, cfg).parameters())
    assert 0.2e6 < counts["0.25M"] < 0.3e6 and 0.9e6 < counts["1M"] < 1.2e6 and 3.5e6 < counts["4M"] < 4.5e6
    with pytest.raises(ValueError, match="unknown size"):
        PretrainConfig.sized("2M")
    with pytest.raises(ValueError, match="divisible"):
        PretrainConfig(hidden_size=100, num_heads=3)
    with pytest.raises(ValueError, match="doc_problems"):
        PretrainConfig(doc_problems=0)
    with pytest.raises(ValueError, match="p_instruct"):
        PretrainConfig(p_instruct=1.5)


def test_toy_pretrain_cli_resume_takes_no_other_options(tmp_path, capsys):
    from tinylora.cli.main import main

    assert main(["toy", "pretrain", "--out", str(tmp_path / "none"), "--resume"]) == 2
    assert "not a pretraining run" in capsys.readouterr().err
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "pretrain_config.json").write_text("{}")
    assert main(["toy", "pretrain", "--out", str(tmp_path / "run"), "--resume", "--steps", "5"]) == 2
    assert "give only --out, --resume" in capsys.readouterr().err


def _dies_during_step(monkeypatch, backbone, n: int) -> None:
    """Make pretraining be killed while it builds step n's batch (the last checkpoint is what survives)."""
    real, calls = backbone.make_batch, []

    def dies(*a, **kw):
        calls.append(1)
        if len(calls) == n:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(backbone, "make_batch", dies)


def test_pretraining_resumes_to_the_same_weights(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from tinylora.toy import backbone

    cfg = dict(steps=6, doc_problems=2, p_instruct=0.5, batch_size=4, threads=1)
    backbone.pretrain(tmp_path / "a", backbone.PretrainConfig.quick(**cfg), progress=False, checkpoint_every=2)
    _dies_during_step(monkeypatch, backbone, 5)  # the checkpoint of step 4 survives
    with pytest.raises(KeyboardInterrupt):
        backbone.pretrain(tmp_path / "b", backbone.PretrainConfig.quick(**cfg), progress=False, checkpoint_every=2)
    monkeypatch.undo()
    assert (tmp_path / "b" / "checkpoint.pt").is_file() and not (tmp_path / "b" / "config.json").exists()
    with pytest.raises(ValueError, match="already holds"):
        backbone.pretrain(tmp_path / "b", backbone.PretrainConfig.quick(**cfg), progress=False)
    with pytest.raises(ValueError, match="another config"):
        backbone.pretrain(tmp_path / "b", backbone.PretrainConfig.quick(**{**cfg, "lr": 1e-3}), progress=False,
                          resume=True)
    backbone.pretrain(tmp_path / "b", backbone.PretrainConfig.quick(**cfg), progress=False,
                      checkpoint_every=2, resume=True)
    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not (tmp_path / "b" / "checkpoint.pt").exists()  # finished: the checkpoint is gone
    assert json.loads((tmp_path / "b" / "pretrain.json").read_text())["threads_from"] == [{"step": 0, "threads": 1}]


def test_a_resume_may_change_threads_and_the_record_says_where(tmp_path, monkeypatch, capsys):
    from tinylora.cli.main import main
    from tinylora.toy import backbone

    run = tmp_path / "run"
    _dies_during_step(monkeypatch, backbone, 3)  # the checkpoint of step 2 survives
    with pytest.raises(KeyboardInterrupt):
        backbone.pretrain(run, backbone.PretrainConfig.quick(steps=4, batch_size=4, threads=1), progress=False,
                          checkpoint_every=2)
    monkeypatch.undo()
    with pytest.warns(UserWarning, match="with 2 threads instead of 1"):
        assert main(["toy", "pretrain", "--out", str(run), "--resume", "--threads", "2",
                     "--checkpoint-every", "2"]) == 0
    rec = json.loads((run / "pretrain.json").read_text())
    assert rec["threads_from"] == [{"step": 0, "threads": 1}, {"step": 2, "threads": 2}]
    assert rec["config"]["threads"] == 2 and rec["config"]["steps"] == 4


def test_arith_uses_a_chat_template_when_the_tokenizer_has_one():
    tok = char_tokenizer()
    t = tasks.get("arith", n_test=1)
    e = t.load("test")[0]
    assert t.prompt(e, tok) == t.prompt(e) == f"Q: {e.question}\nA:"  # the toy tokenizer: plain format
    tok.chat_template = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}<|assistant|>"
    chat = t.prompt(e, tok)
    assert chat.startswith("<|user|>Q: " + e.question) and chat.endswith("<|assistant|>")
    assert tasks.get("arith", n_test=1, forced=True).prompt(e, tok).endswith("<|assistant|> Step by step:")


def test_style_probability_matches_the_greedy_first_token():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tinylora.toy.backbone import shipped_path
    from tinylora.tasks.arith import style_probability

    model, tok = AutoModelForCausalLM.from_pretrained(shipped_path()), AutoTokenizer.from_pretrained(shipped_path())
    s = style_probability(model, tok, n=8)
    picks = 0
    for p in problems("test", 8):  # one prompt at a time, no padding: the reference
        ids = tok(f"Q: {p.question}\nA: ", return_tensors="pt", add_special_tokens=False)["input_ids"]
        logits = model(ids).logits[0, -1]
        picks += int(logits[tok.convert_tokens_to_ids("S")] > logits[tok.convert_tokens_to_ids("#")])
    assert s["greedy_picks_step"] == picks / 8 and 0 < s["p_step"] < 1


def test_arith_diagnostics_track_the_style_choice_on_train_prompts(quick_backbone):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tinylora.tasks.arith import style_probability

    model, tok = AutoModelForCausalLM.from_pretrained(quick_backbone), AutoTokenizer.from_pretrained(quick_backbone)
    model.train()
    d = tasks.get("arith").diagnostics(model, tok)
    ref = style_probability(model.eval(), tok, n=64, split="train")
    assert d == {"p_step": ref["p_step"], "greedy_picks_step": ref["greedy_picks_step"]}
    assert tasks.get("arith", forced=True).diagnostics(model, tok) == {}
    assert tasks.get("gsm8k").diagnostics(model, tok) == {}


def test_the_console_prints_our_warnings_as_one_line(tmp_path):
    from tinylora.cli import main as cli
    from tinylora.toy import backbone as ours

    assert cli._one_line_warning("resuming x", UserWarning, ours.__file__, 7) == "tinylora: warning: resuming x\n"
    # another library's file, even under a folder named tinylora, keeps its source line
    theirs = str(tmp_path / "tinylora" / "venv" / "transformers" / "a.py")
    assert "DeprecationWarning: old" in cli._one_line_warning("old", DeprecationWarning, theirs, 7)
