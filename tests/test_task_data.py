"""The real benchmark files (../shared/data) load, and every gold answer checks as correct."""

import pytest

from tinylora import tasks
from tinylora.tasks.answers import last_boxed


@pytest.mark.parametrize("split,n", [("train", 7473 - 500), ("validation", 500), ("test", 1319)])
def test_every_gsm8k_gold_solution_extracts_to_its_reference(shared_data, split, n):
    task = tasks.get("gsm8k", data_dir=shared_data / "gsm8k")
    examples = task.load(split)
    assert len(examples) == n
    for mode in ("strict", "flexible"):
        t = tasks.get("gsm8k", data_dir=shared_data / "gsm8k", mode=mode)
        bad = [e.id for e in examples if t.score(e.solution, e.answer) != 1.0]
        assert bad == [], f"{mode}: {bad[:5]}"
    # and a wrong answer never scores
    assert all(task.score(f"#### {float(e.answer) + 1:g}", e.answer) == 0 for e in examples[:200])


def test_gsm8k_validation_is_carved_from_train_and_disjoint(shared_data):
    t = tasks.get("gsm8k", data_dir=shared_data / "gsm8k", val_size=300)
    train, val = t.load("train"), t.load("validation")
    whole = tasks.get("gsm8k", data_dir=shared_data / "gsm8k", val_size=0).load("train")
    assert len(whole) == 7473 and len(train) == 7173 and len(val) == 300
    assert [e.question for e in train + val] == [e.question for e in whole]  # a split, in file order
    assert not {e.question for e in val} & {e.question for e in t.load("test")}
    for bad in (-1, 7473, "5", True):
        with pytest.raises(ValueError, match="val_size"):
            tasks.get("gsm8k", data_dir=shared_data / "gsm8k", val_size=bad).load("train")
    with pytest.raises(ValueError, match="no validation"):
        tasks.get("gsm8k", data_dir=shared_data / "gsm8k", val_size=0).load("validation")


def test_every_math500_gold_boxed_answer_verifies(shared_data):
    task = tasks.get("math500", data_dir=shared_data)  # parent folder form: DIR/math500/test.jsonl
    examples = task.load("test")
    assert len(examples) == 500
    bad = [(e.id, last_boxed(e.solution), e.answer) for e in examples if task.score(e.solution, e.answer) != 1.0]
    assert bad == []


def test_data_dir_errors(tmp_path):
    with pytest.raises(tasks.TaskDataError, match="no test.jsonl"):
        tasks.get("gsm8k", data_dir=tmp_path).load("test")
    with pytest.raises(ValueError, match="splits"):
        tasks.get("gsm8k", data_dir=tmp_path).load("dev")


def test_hub_unreachable_says_what_to_do(monkeypatch):
    monkeypatch.delenv("TINYLORA_DATA_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(tasks.TaskDataError, match="--data-dir"):
        tasks.get("gsm8k").load("test")
