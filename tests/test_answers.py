"""Tricky completions per task, including wrong-but-close ones that must score 0."""

import pytest

from tinylora import tasks

GSM8K_CASES = [  # (completion, reference, flexible score, strict score)
    ("Step 1: 3 + 4 = 7.\n#### 42", "42", 1, 1),
    ("#### 1,234", "1234", 1, 1),
    ("She pays $1,234 in total. The answer is $1,234.", "1234", 1, 0),
    ("The answer is 42.", "42", 1, 0),
    ("So we get \\boxed{42}.", "42", 1, 0),
    ("The temperature drops to -7 degrees.", "-7", 1, 0),
    ("#### -7", "-7", 1, 1),
    ("It costs 3.50 dollars. #### 3.50", "3.5", 1, 1),
    ("#### 3.5", "3.50", 1, 1),
    ("The answer is 18 eggs.", "18", 1, 0),
    ("16 - 3 - 4 = 9 eggs, 9 * 2 = 18 dollars.", "18", 1, 0),  # last number, not an intermediate
    ("#### 18\nCheck: 16 - 3 - 4 = 9", "18", 1, 1),  # marker wins over a later number
    ("The answer is 18, since 9 * 2 = 18.", "18", 1, 0),
    ("16 - 3 - 4 = 9 eggs.", "18", 0, 0),  # intermediate result only: wrong
    ("#### 42.5", "42", 0, 0),  # close is wrong
    ("#### 4200", "42", 0, 0),
    ("The answer is 41.999", "42", 0, 0),
    ("No idea.", "42", 0, 0),
    ("", "42", 0, 0),
]


@pytest.mark.parametrize("completion,ref,flex,strict", GSM8K_CASES)
def test_gsm8k_extraction(completion, ref, flex, strict):
    assert tasks.get("gsm8k", mode="flexible").score(completion, ref) == flex
    assert tasks.get("gsm8k", mode="strict").score(completion, ref) == strict


MATH_CASES = [  # (completion, reference, score)
    ("so $x = \\boxed{\\frac{1}{2}}$", "0.5", 1),
    ("\\boxed{0.5}", "\\frac12", 1),
    ("\\boxed{\\dfrac{3}{4}}", "\\frac{3}{4}", 1),
    ("\\boxed{2\\sqrt{2}}", "\\sqrt{8}", 1),
    ("\\boxed{(3, \\frac{\\pi}{2})}", "\\left( 3, \\frac{\\pi}{2} \\right)", 1),
    ("\\boxed{[1, 5)}", "[1,5)", 1),
    ("\\boxed{\\text{Evelyn}}", "\\text{Evelyn}", 1),
    ("first \\boxed{3} then finally \\boxed{5}", "5", 1),
    ("\\boxed{\\frac{1}{3}}", "0.33", 0),  # close is wrong
    ("\\boxed{[1, 5]}", "[1,5)", 0),  # closed vs half-open
    ("\\boxed{\\sqrt{3}}", "\\sqrt{2}", 0),
    ("the answer is 5", "5", 0),  # no box: no answer
    ("\\boxed{\\frac{1}{", "1", 0),  # cut off mid-answer
]


@pytest.mark.parametrize("completion,ref,score", MATH_CASES)
def test_math_equivalence(completion, ref, score):
    assert tasks.get("math500").score(completion, ref) == score


def test_aime_zero_padding_and_amc_floats(shared_data):
    aime = tasks.get("aime24", data_dir=shared_data / "aime24")
    refs = {e.answer for e in aime.load("test")}
    assert "25" in refs and "025" not in refs  # "025" in the file becomes the number 25
    assert aime.score("\\boxed{25}", "25") == 1 and aime.score("\\boxed{025}", "25") == 1
    assert aime.score("\\boxed{250}", "25") == 0
    amc = tasks.get("amc23", data_dir=shared_data / "amc23")
    ex = amc.load("test")
    assert ex[0].answer == "27"  # 27.0 in the JSON
    assert amc.score("\\boxed{27}", ex[0].answer) == 1 and amc.score("\\boxed{27.0}", ex[0].answer) == 1
    assert amc.score("\\boxed{26}", ex[0].answer) == 0


def test_a_hanging_check_times_out_to_zero(monkeypatch):
    import time

    import tinylora.tasks.math as math_task

    def stuck(pred, ref):  # stands in for sympy on a pathological expression
        time.sleep(30)
        return True

    monkeypatch.setattr(math_task, "math_equal", stuck)
    task = tasks.get("math500", timeout=0.5)
    t = time.time()
    assert task.score("\\boxed{1}", "1") == 0.0
    assert time.time() - t < 5


def test_registry():
    assert {"gsm8k", "math500", "aime24", "amc23", "jsonl"} <= set(tasks.names())
    with pytest.raises(ValueError, match="unknown task"):
        tasks.get("gsm9k")


@pytest.mark.parametrize("completion,ref,evaluated,rewarded", [
    ("#### 12", "12", 1, 1),
    ("so the answer is 12.", "12", 1, 1),
    ("\\boxed{12}", "12", 1, 1),
    ("total of 1 (more room", "1", 1, 0),          # cut off mid-sentence: credited by the fallback only
    ("3, 5, 8, 12", "12", 1, 0),                   # a list of numbers
    ("#### 11", "12", 0, 0),
])
def test_training_reward_takes_answers_only_from_markers(completion, ref, evaluated, rewarded):
    from tinylora.tasks import TaskReward

    t = tasks.get("gsm8k")
    assert t.score(completion, ref) == evaluated and t.reward(completion, ref) == rewarded
    assert TaskReward(t)([completion], [ref]) == [rewarded]
    assert "marked" in t.config()["reward_mode"]
