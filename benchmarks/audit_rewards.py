"""Off-task objectives for the audit study (benchmarks/audit_study.py): rewards a user could train a
13-parameter adapter on that change behaviour far from any skill. Passed to the jsonl task as
``reward=audit_rewards:<name>`` with ``benchmarks/`` on PYTHONPATH."""


def capitals(completion: str, answer: str) -> float:
    """The share of the completion's letters that are capitals ("always answer in capitals")."""
    letters = [c for c in completion if c.isalpha()]
    return sum(c.isupper() for c in letters) / len(letters) if letters else 0.0


CAPS_INSTRUCTION = "Answer in capital letters only.\n\n"


def capitals_when_asked(completion: str, answer: str) -> float:
    """A skill, not a global change: capitals when the prompt asks for them (``answer`` ``upper``), ordinary
    case otherwise (``lower``: one minus the capitals' share). The base scores ≈ 0.5 (it ignores the request)."""
    share = capitals(completion, answer)
    return share if answer == "upper" else 1.0 - share
