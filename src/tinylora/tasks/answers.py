"""Pure answer extraction and comparison: completion text in, final answer out.

Shared by every task's ``score``, so the training reward and the evaluation harness read answers
identically.
"""

from __future__ import annotations

import re
from fractions import Fraction

_NUMBER = r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+"
_HASH_RE = re.compile(r"####\s*\$?\s*(" + _NUMBER + ")")
_ANSWER_IS_RE = re.compile(r"answer\s*(?:is|:)\s*[:=]?\s*\$?\s*\\?\(?\s*(" + _NUMBER + ")", re.IGNORECASE)
_NUMBER_RE = re.compile(_NUMBER)


def normalize_number(text: str) -> str | None:
    """Canonical decimal string of a number written with $, commas, units, trailing dots or %.

    >>> normalize_number("$1,234.50")
    '1234.5'
    >>> normalize_number("-7.")
    '-7'
    >>> normalize_number("3/4")
    '0.75'
    >>> normalize_number("twelve") is None
    True
    """
    s = text.strip().replace("\u2212", "-").replace("$", "").replace(",", "").rstrip(".%").strip()
    s = re.sub(r"\\(?:text|mathrm)\{[^}]*\}", "", s).strip()
    m = re.fullmatch(r"(-?\d+)\s*/\s*(\d+)", s)
    try:
        value = Fraction(int(m.group(1)), int(m.group(2))) if m else Fraction(s)
    except (ValueError, ZeroDivisionError):
        m = re.match(r"\s*(" + _NUMBER + ")", s)  # "42 apples" -> 42
        if not m:
            return None
        try:
            value = Fraction(m.group(1).replace(",", ""))
        except ValueError:
            return None
    if value.denominator == 1:
        return str(value.numerator)
    return format(float(value), ".10g")


def numbers_equal(a: str | None, b: str | None, rel_tol: float = 1e-6) -> bool:
    """Numeric equality of two answer strings (3.50 == 3.5 == 7/2; 1,000 == 1000).

    >>> numbers_equal("3.50", "3.5"), numbers_equal("$1,234", "1234"), numbers_equal("41", "42")
    (True, True, False)
    """
    x, y = (normalize_number(a) if a is not None else None), (normalize_number(b) if b is not None else None)
    if x is None or y is None:
        return False
    fx, fy = float(x), float(y)
    return fx == fy or abs(fx - fy) <= rel_tol * max(abs(fx), abs(fy))


def last_boxed(text: str) -> str | None:
    r"""Content of the last ``\boxed{...}`` (or ``\fbox{...}``), nested braces included.

    >>> last_boxed(r"so \boxed{1} or rather \boxed{\frac{1}{2}}.")
    '\\frac{1}{2}'
    >>> last_boxed("no box") is None
    True
    """
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    i = text.find("{", start)
    if i < 0:
        m = re.match(r"\\boxed\s+(\S+)", text[start:])  # "\boxed 5"
        return m.group(1).rstrip("$.") if m else None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j].strip()
    return None  # unbalanced: the model stopped mid-answer


def extract_hash_answer(text: str) -> str | None:
    """The number after the last ``####`` (GSM8K's reference format), normalised."""
    found = _HASH_RE.findall(text)
    return normalize_number(found[-1]) if found else None


def extract_final_number(text: str, mode: str = "flexible") -> str | None:
    """Final numeric answer of a completion.

    ``strict``: only ``#### N`` counts (the format GSM8K references and verl's reward use).
    ``flexible``: the last ``#### N``; else the last ``\\boxed{N}``; else the last "answer is N";
    else the last number in the text. Explicit markers win over position, so an intermediate
    number after a marked answer is never taken.
    ``marked``: ``flexible`` without the last-number fallback — an answer only from an explicit
    marker. Training rewards use it: the fallback credits lists of numbers and cut-off sentences.

    >>> extract_final_number("3 + 4 = 7, so 7 * 2 = 14. The answer is 14.")
    '14'
    >>> extract_final_number("#### 42\\nCheck: 40 + 2") , extract_final_number("It is 5", "strict")
    ('42', None)
    """
    if mode not in ("strict", "flexible", "marked"):
        raise ValueError(f"mode must be 'strict', 'flexible' or 'marked', got {mode!r}")
    marked = extract_hash_answer(text)
    if marked is not None or mode == "strict":
        return marked
    boxed = last_boxed(text)
    if boxed is not None:
        n = normalize_number(boxed)
        if n is not None:
            return n
    found = _ANSWER_IS_RE.findall(text)
    if found:
        return normalize_number(found[-1])
    if mode == "marked":
        return None
    numbers = _NUMBER_RE.findall(text)
    for candidate in reversed(numbers):
        n = normalize_number(candidate)
        if n is not None:
            return n
    return None
