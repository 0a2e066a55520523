"""What a request may ask for: the fields the server implements, their types and ranges, and the
OpenAI-shaped error raised for anything else (never a silent ignore)."""

from __future__ import annotations

import math


class HTTPError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.headers = status, message, kind, headers or {}


def number_field(body: dict, key: str, default, kind, lo=None, hi=None):
    v = body.get(key, default)
    if v is None:
        v = default
    if kind is int and (isinstance(v, bool) or not isinstance(v, int)):
        raise HTTPError(400, f"{key} must be an integer, got {v!r}")
    if kind is float and (isinstance(v, bool) or not isinstance(v, (int, float))):
        raise HTTPError(400, f"{key} must be a number, got {v!r}")
    if kind is float and not math.isfinite(v):  # JSON as Python reads it admits NaN and Infinity
        raise HTTPError(400, f"{key} must be a finite number, got {v!r}")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise HTTPError(400, f"{key} must be in [{lo}, {hi}], got {v!r}")
    return kind(v)


# Every request field tinylora acts on; any other field is refused with 400 naming it, never ignored
# (a client that asks for presence_penalty must not get an answer computed without it).
_COMMON = {"model", "max_tokens", "temperature", "top_p", "n", "stop", "seed", "stream", "stream_options",
           "presence_penalty", "frequency_penalty", "logit_bias", "user"}
COMPLETION_FIELDS = _COMMON | {"prompt", "logprobs", "echo", "best_of", "suffix"}
CHAT_FIELDS = _COMMON | {"messages", "max_completion_tokens", "logprobs", "top_logprobs"}


def check_fields(body: dict, known: set[str]) -> None:
    """Refuse fields we do not implement, and values of implemented ones that we cannot honour."""
    unknown = sorted(set(body) - known)
    if unknown:
        raise HTTPError(400, f"unsupported field(s) {', '.join(unknown)}: tinylora serve does not implement them "
                             "and refuses rather than ignores them")
    for key in ("presence_penalty", "frequency_penalty"):
        v = body.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not -2 <= v <= 2):  # NaN too
            raise HTTPError(400, f"{key} must be a number in [-2, 2], got {v!r}")
        if v:
            raise HTTPError(400, f"{key}={v} is not supported (only 0): tinylora samples without penalties")
    if body.get("logit_bias") not in (None, {}):
        raise HTTPError(400, "logit_bias is not supported (only {} or null)")
    if body.get("suffix") is not None:
        raise HTTPError(400, "suffix (insertion) is not supported")
    if body.get("user") is not None and not isinstance(body["user"], str):
        raise HTTPError(400, "user must be a string")
    opts = body.get("stream_options")
    if opts is not None:
        if not body.get("stream"):
            raise HTTPError(400, "stream_options is only allowed with stream: true")
        if not isinstance(opts, dict) or set(opts) - {"include_usage"} or not isinstance(
                opts.get("include_usage", False), bool):
            raise HTTPError(400, "stream_options supports only {include_usage: true|false}")
    for key in ("stream", "echo"):
        if body.get(key) is not None and not isinstance(body[key], bool):
            raise HTTPError(400, f"{key} must be true or false, got {body[key]!r}")


def token_texts(tok, ids: list[int]) -> list[str]:
    return [tok.decode([i]) for i in ids]
