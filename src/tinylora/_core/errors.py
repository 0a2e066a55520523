"""One base class for what the library refuses, so a program can catch all of tinylora's errors at once
(the CLI turns each into one line, ``tinylora CMD: error: …``, exit 2). Each error also keeps the
built-in type it always had (ValueError, FileNotFoundError, ImportError), so existing handlers still work."""


class TinyLoRAError(Exception):
    """Base class of the errors tinylora raises on purpose (bad input, missing model, damaged file …)."""


class MissingDependencyError(TinyLoRAError, ImportError):
    """An optional package is not installed (a scorer's, a logger's, vLLM): an error to fix with the
    install command it names, never a silent fallback (a reward of 0, another engine)."""
