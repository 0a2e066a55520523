import json

import pytest

from tinylora import tasks


def write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_user_task_with_named_rewards(tmp_path):
    f = write(tmp_path / "t.jsonl", [{"q": "2+2?", "a": "4"}, {"q": "capital of France?", "a": "Paris"}])
    t = tasks.get("jsonl", path=str(f), prompt_field="q", answer_field="a", reward="exact")
    ex = t.load("test")
    assert [e.question for e in ex] == ["2+2?", "capital of France?"]
    assert t.score(" Paris ", "Paris") == 1 and t.score("paris", "Paris") == 0
    assert tasks.get("jsonl", path=str(f), prompt_field="q", answer_field="a", reward="numeric").score("so 4.0", "4") == 1
    assert tasks.get("jsonl", path=str(f), prompt_field="q", answer_field="a",
                     reward=r"regex:ANSWER:\s*(\w+)").score("x ANSWER: Paris", "Paris") == 1
    assert tasks.get("jsonl", path=str(f), prompt_field="q", answer_field="a", reward="math").score(
        "\\boxed{\\frac{8}{2}}", "4") == 1


def _raises(completion, answer):
    raise RuntimeError("boom")


def _hangs(completion, answer):
    import time

    time.sleep(30)
    return 1.0


def _half(completion, answer):
    return 0.5 if answer in completion else 0.0


def test_dotted_reward_and_failures_are_counted_not_raised(tmp_path):
    f = write(tmp_path / "t.jsonl", [{"prompt": "p", "answer": "x"}])
    t = tasks.get("jsonl", path=str(f), reward="test_jsonl_task:_half")
    assert t.score("has x", "x") == 0.5
    bad = tasks.get("jsonl", path=str(f), reward="test_jsonl_task:_raises")
    assert bad.score("a", "x") == 0.0 and bad.score("b", "x") == 0.0
    assert bad.reward_report()["errors"] == 2 and "boom" in bad.reward_report()["messages"][0]
    slow = tasks.get("jsonl", path=str(f), reward="test_jsonl_task:_hangs", timeout=0.3)
    assert slow.score("a", "x") == 0.0 and slow.reward_report()["timeouts"] == 1


@pytest.mark.parametrize("rows,match", [
    ([{"prompt": "p"}], r"t.jsonl:1: missing field\(s\) \['answer'\]"),
    ([{"prompt": "p", "answer": "a"}, "{not json"], r"t.jsonl:2: not valid JSON"),
    (["[1, 2]"], r"t.jsonl:1: expected a JSON object"),
    ([], "has no examples"),
])
def test_bad_files_name_file_and_line(tmp_path, rows, match):
    f = write(tmp_path / "t.jsonl", rows)
    with pytest.raises(tasks.TaskDataError, match=match):
        tasks.get("jsonl", path=str(f)).load("test")


def test_bad_reward_specs(tmp_path):
    f = write(tmp_path / "t.jsonl", [{"prompt": "p", "answer": "a"}])
    with pytest.raises(ValueError, match="cannot import"):
        tasks.get("jsonl", path=str(f), reward="no_such_module:fn")
    with pytest.raises(ValueError, match="bad regex"):
        tasks.get("jsonl", path=str(f), reward="regex:(")
    with pytest.raises(tasks.TaskDataError, match="needs path"):
        tasks.get("jsonl")
