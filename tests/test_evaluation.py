import json
import math

import pytest
import torch

from tinylora import tasks
from tinylora.cli.main import main
from tinylora.evaluation import pass_at_k, wilson_interval
from tinylora.toy.tokenizer import char_tokenizer
from conftest import make_model


def test_pass_at_k_and_interval_by_hand():
    assert pass_at_k(4, 0, 1) == 0 and pass_at_k(4, 4, 2) == 1
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(1 - math.comb(3, 2) / math.comb(4, 2))  # 0.5
    assert pass_at_k(5, 2, 3) == pytest.approx(1 - math.comb(3, 3) / math.comb(5, 3))  # 0.9
    lo, hi = wilson_interval(0, 10)
    assert lo == 0 and 0.25 < hi < 0.32  # 0.2775
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-3) and hi == pytest.approx(0.7634, abs=1e-3)


@pytest.fixture
def tiny_dir(tmp_path):
    tok = char_tokenizer()
    model = make_model("qwen2", vocab_size=len(tok), max_position_embeddings=2048)
    model.config.eos_token_id = tok.eos_token_id
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    return tmp_path / "m"


def test_eval_cli_end_to_end_and_resume(tiny_dir, tmp_path, shared_data, capsys):
    out = tmp_path / "eval"
    args = ["eval", "--model", str(tiny_dir), "--task", "gsm8k", "--data-dir", str(shared_data / "gsm8k"),
            "--limit", "5", "--batch-size", "2", "--max-new-tokens", "12", "--out", str(out)]
    assert main(args) == 0
    lines = (out / "examples.jsonl").read_text().splitlines()
    summary = json.loads((out / "summary.json").read_text())
    assert len(lines) == 5 and summary["n"] == 5 and summary["resumed"] == 0
    assert summary["task"]["name"] == "gsm8k" and "torch" in summary["versions"]
    rec = json.loads(lines[0])
    assert set(rec) == {"id", "prompt", "completions", "extracted", "reference", "scores", "tokens", "capped",
                        "mode_scores"}
    assert set(summary["modes"]) == {"strict", "flexible"} and 0 <= summary["capped_share"] <= 1
    assert "strict" in capsys.readouterr().out  # both modes printed side by side
    # the training reward scores the stored completions exactly as the evaluation did
    reward = tasks.TaskReward(tasks.get("gsm8k"))
    recs = [json.loads(line) for line in lines]
    assert [r["scores"][0] for r in recs] == reward([r["completions"][0] for r in recs], [r["reference"] for r in recs])
    # and both agree on completions built to be right and wrong
    refs = [r["reference"] for r in recs]
    made = [f"so #### {x}" if i % 2 else f"#### {float(x) + 1:g}" for i, x in enumerate(refs)]
    assert reward(made, refs) == [float(i % 2) for i in range(5)]

    # resume: a killed run left 3 of 5; re-running redoes only the 2 missing, same results
    (out / "examples.jsonl").write_text("\n".join(lines[:3]) + "\n" + lines[3][:20])  # last line cut mid-write
    assert main(args) == 0
    again = json.loads((out / "summary.json").read_text())
    assert again["resumed"] == 3 and again["n"] == 5
    assert again["accuracy"] == summary["accuracy"]
    ids = [json.loads(x)["id"] for x in (out / "examples.jsonl").read_text().splitlines()]  # all lines parse
    assert sorted(ids) == sorted(json.loads(x)["id"] for x in lines)

    # another configuration in the same folder is refused, nothing overwritten
    assert main(args[:-2] + ["--out", str(out), "--max-new-tokens", "5"]) == 2
    assert "another configuration" in capsys.readouterr().err


def test_prompt_uses_chat_template_with_recorded_wording(tiny_dir):
    from tinylora.models.loading import load_tokenizer

    tok = load_tokenizer(str(tiny_dir))
    task = tasks.get("gsm8k", system="You are exact.", template="Solve: {question}")
    ex = tasks.Example(id="0", question="1+1?", answer="2")
    assert task.prompt(ex, tok) == "You are exact.\n\nSolve: 1+1?"  # no chat template: plain text
    tok.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                         "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    assert task.prompt(ex, tok) == "<|system|>You are exact.\n<|user|>Solve: 1+1?\n<|assistant|>"
    assert task.config()["system"] == "You are exact." and task.config()["template"] == "Solve: {question}"
    with pytest.raises(ValueError, match="question"):
        tasks.get("gsm8k", template="no placeholder")


def test_sampled_pass_at_k(tiny_dir, tmp_path):
    from tinylora.evaluation import evaluate
    from tinylora.models.loading import load_model, load_tokenizer

    f = tmp_path / "t.jsonl"
    f.write_text("".join(json.dumps({"prompt": f"say {c}", "answer": c}) + "\n" for c in "abc"))
    task = tasks.get("jsonl", path=str(f), reward="regex:([a-z])")
    torch.manual_seed(0)
    s = evaluate(load_model(str(tiny_dir)), load_tokenizer(str(tiny_dir)), task, samples=4, temperature=1.0,
                 max_new_tokens=3, progress=False)
    assert s["n"] == 3 and set(s["pass@k"]) == {"1", "2", "4"}
    assert s["pass@k"]["1"] <= s["pass@k"]["2"] <= s["pass@k"]["4"]
    assert s["pass@k"]["1"] == pytest.approx(s["accuracy"])
    with pytest.raises(ValueError, match="temperature > 0"):
        evaluate(load_model(str(tiny_dir)), load_tokenizer(str(tiny_dir)), task, samples=2, progress=False)


def test_sampled_evaluation_resumes_to_the_same_samples(tiny_dir, tmp_path):
    from tinylora.evaluation import evaluate
    from tinylora.models.loading import load_model, load_tokenizer

    f = tmp_path / "t.jsonl"
    f.write_text("".join(json.dumps({"prompt": f"say {c}", "answer": c}) + "\n" for c in "abcde"))
    task = tasks.get("jsonl", path=str(f), reward="regex:([a-z])")
    model, tok = load_model(str(tiny_dir)), load_tokenizer(str(tiny_dir))
    kw = dict(samples=3, temperature=1.0, max_new_tokens=4, batch_size=2, progress=False, out_dir=tmp_path / "e")
    evaluate(model, tok, task, **kw)
    full = (tmp_path / "e" / "examples.jsonl").read_text().splitlines()
    (tmp_path / "e" / "examples.jsonl").write_text(full[0] + "\n")  # killed after one example
    evaluate(model, tok, task, **kw)  # redoes 4 examples in different batches
    again = (tmp_path / "e" / "examples.jsonl").read_text().splitlines()
    by_id = lambda lines: {json.loads(x)["id"]: json.loads(x)["completions"] for x in lines}  # noqa: E731
    assert by_id(again) == by_id(full)


def test_gsm8k_reports_strict_and_flexible_from_the_same_completions():
    """A format gain must never read as a reasoning gain: each mode's accuracy and interval, exactly."""
    from tinylora.evaluation import summarize, wilson_interval

    task = tasks.get("gsm8k")
    comps = ["so #### 7", "the answer is 7", "\\boxed{7}", "7", "#### 8", "it is 3 then 7 and stop"]
    recs = [{"scores": [task.score(c, "7")], "mode_scores": {m: [v] for m, v in task.score_modes(c, "7").items()},
             "tokens": [10 * (i + 1)], "capped": [i == 5]} for i, c in enumerate(comps)]
    s = summarize(recs, 1)
    assert s["modes"]["strict"]["accuracy"] == 1 / 6  # only "#### 7"
    assert s["modes"]["flexible"]["accuracy"] == 5 / 6  # every reading but the wrong "#### 8"
    assert s["modes"]["strict"]["ci95"] == list(wilson_interval(1, 6))
    assert s["accuracy"] == s["modes"]["flexible"]["accuracy"]  # the task's default mode is flexible
    assert s["mean_tokens"] == 35 and s["capped_share"] == 1 / 6


def test_eval_refuses_bad_arguments_before_loading_the_model(tmp_path, capsys):
    """--limit -3 evaluated 497 examples, --limit 0 reported on none; each is now one line, no model loaded."""
    missing = str(tmp_path / "no-model")  # loading it would fail differently: nothing got that far
    base = ["eval", "--model", missing, "--task", "gsm8k"]
    cases = [(["--limit", "-3"], "limit must be a positive integer"), (["--limit", "0"], "limit must be"),
             (["--samples", "2"], "needs a temperature"), (["--batch-size", "0"], "batch_size"),
             (["--temperature", "nan"], "temperature"), (["--adapter", str(tmp_path / "none.safetensors")],
                                                         "no such adapter file")]
    for extra, msg in cases:
        assert main(base + extra) == 2, extra
        err = capsys.readouterr().err
        assert msg in err and "cannot load model" not in err and len(err.strip().splitlines()) == 1, (extra, err)
    (tmp_path / "not-an-adapter.safetensors").write_bytes(b"\0" * 32)
    assert main(base + ["--adapter", str(tmp_path / "not-an-adapter.safetensors")]) == 2
    assert "not a readable safetensors" in capsys.readouterr().err
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my own file")
    assert main(base + ["--out", str(mine)]) == 2
    assert "not an evaluation" in capsys.readouterr().err and (mine / "notes.txt").read_text() == "my own file"
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
