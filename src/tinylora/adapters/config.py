"""Typed configs for the four parameterizations; each validates once and round-trips to dict/JSON/YAML.

The configs are plain dataclasses so a run can be written next to its outputs and rebuilt from the
file. ``method`` is the discriminator used by :func:`config_from_dict`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from .._core.dtypes import DTYPE_NAMES

TYING_MODES = ("none", "tiled", "structured", "all")
STORAGE_DTYPES = DTYPE_NAMES  # how trained values may be stored

# Linear layers adapted when the user names none. Llama/Qwen/Mistral-style decoders use the first
# list; GPT-2 uses fused Conv1D projections.
DEFAULT_TARGETS_LLAMA = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
DEFAULT_TARGETS_GPT2 = ("c_attn", "c_proj", "c_fc")


@dataclass
class AdapterConfig:
    """Fields every parameterization shares.

    target_modules: names matched against the last component of a module's name (``q_proj``) or
    its full dotted name; ``None`` picks the architecture's default (see ``DEFAULT_TARGETS_*``).
    """

    method: ClassVar[str] = ""
    target_modules: list[str] | None = None

    def __post_init__(self) -> None:
        if self.target_modules is not None:
            if isinstance(self.target_modules, str):
                self.target_modules = [self.target_modules]
            self.target_modules = list(self.target_modules)
            if not self.target_modules or not all(isinstance(t, str) and t for t in self.target_modules):
                raise ValueError(f"target_modules must be a non-empty list of names, got {self.target_modules!r}")
        self.validate()

    def validate(self) -> None:  # overridden by subclasses
        pass

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, **dataclasses.asdict(self)}

    def to_yaml(self, path: str | Path | None = None) -> str:
        import yaml

        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            Path(path).write_text(text)
        return text


def _positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


@dataclass
class FullConfig(AdapterConfig):
    """Full fine-tuning of the target weights: ΔW is a dense trainable tensor, zero at init.

    Kept as a separate zero-initialised tensor (rather than unfreezing W) so that every
    parameterization shares one contract: the base weights stay bit-identical and ΔW is the update.
    """

    method: ClassVar[str] = "full"


@dataclass
class LoRAConfig(AdapterConfig):
    """LoRA (Hu et al. 2021): ΔW = (alpha / r) · B A, A ~ Kaiming-uniform, B = 0 at init."""

    method: ClassVar[str] = "lora"
    r: int = 8
    alpha: float = 16.0
    seed: int = 0  # initialises A; recorded so a run is reproducible

    def validate(self) -> None:
        _positive_int("r", self.r)


@dataclass
class LoRAXSConfig(AdapterConfig):
    """LoRA-XS (Bałazy et al. 2024): ΔW = U Σ R Vᵀ with the frozen rank-r truncated SVD of W.

    R (r × r) is trainable and zero at init.
    """

    method: ClassVar[str] = "lora_xs"
    r: int = 2

    def validate(self) -> None:
        _positive_int("r", self.r)


@dataclass
class TinyLoRAConfig(AdapterConfig):
    """TinyLoRA (Morris et al. 2026, arXiv 2602.04118): ΔW = α · U Σ R Vᵀ, R = (1/√u) Σᵢ vᵢ Pᵢ.

    Choices the paper leaves open, fixed here:

    - P ∈ R^{u×r×r} per module, i.i.d. N(0, 1), regenerated from (seed, module index) by a
      portable generator (:mod:`tinylora._core.seeding`), so every machine and library version gets
      the same P without storing it.
    - The 1/√u keeps the scale of R independent of u for a given ‖v‖ (R's entries have variance
      ‖v‖²/u), so one learning rate transfers across u.
    - α = 1 by default; v starts at zero, so the model is unchanged at init.
    - Weight tying (``tying``): ``none`` gives every module its own v; ``tiled`` shares one v over
      consecutive blocks of ``n_tie`` modules in model order; ``structured`` groups modules by
      type (all q_proj, all k_proj, …) then blocks of ``n_tie`` over depth within each type;
      ``all`` shares one v over the whole model. Trainable parameters = groups × u.
    - ``budget``: ask for a total number of trainable parameters instead of ``n_tie``; the
      smallest ``n_tie`` whose groups × u fits in the budget is chosen at attach time.
    """

    method: ClassVar[str] = "tinylora"
    r: int = 2
    u: int = 13
    alpha: float = 1.0
    tying: Literal["none", "tiled", "structured", "all"] = "all"
    n_tie: int | None = None
    budget: int | None = None
    seed: int = 0

    def validate(self) -> None:
        _positive_int("r", self.r)
        _positive_int("u", self.u)
        if self.tying not in TYING_MODES:
            raise ValueError(f"tying must be one of {TYING_MODES}, got {self.tying!r}")
        if self.n_tie is not None and self.budget is not None:
            raise ValueError("give either n_tie or budget, not both")
        if self.n_tie is not None:
            _positive_int("n_tie", self.n_tie)
            if self.tying not in ("tiled", "structured"):
                raise ValueError(f"n_tie only applies to tying='tiled' or 'structured', not {self.tying!r}")
        if self.budget is not None:
            _positive_int("budget", self.budget)
            if self.tying not in ("tiled", "structured"):
                raise ValueError(f"budget only applies to tying='tiled' or 'structured', not {self.tying!r}")
            if self.budget < self.u:
                raise ValueError(f"budget={self.budget} is smaller than one vector of u={self.u} parameters")
        if self.tying in ("tiled", "structured") and self.n_tie is None and self.budget is None:
            raise ValueError(f"tying={self.tying!r} needs n_tie=… or budget=…")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")


CONFIG_CLASSES: dict[str, type[AdapterConfig]] = {
    c.method: c for c in (FullConfig, LoRAConfig, LoRAXSConfig, TinyLoRAConfig)
}


def config_from_dict(data: dict[str, Any]) -> AdapterConfig:
    """Rebuild a config from :meth:`AdapterConfig.to_dict` output (or a YAML/JSON file's contents)."""
    data = dict(data)
    method = data.pop("method", None)
    if method not in CONFIG_CLASSES:
        raise ValueError(f"unknown method {method!r}; expected one of {sorted(CONFIG_CLASSES)}")
    cls = CONFIG_CLASSES[method]
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown field(s) {unknown} for method {method!r}; known: {sorted(known)}")
    return cls(**data)


def read_yaml(path: str | Path, text: str | None = None) -> dict:
    """A YAML mapping from a file; a syntax error is one line with file, line and column (no traceback)."""
    import yaml

    path = Path(path)
    if text is None:
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        text = path.read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        what = " ".join(x for x in (getattr(e, "context", None), getattr(e, "problem", None)) if x) or str(e)
        raise ValueError(f"{where}: YAML syntax error: {what}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of keys to values, got a {type(data).__name__}")
    return data


def config_from_yaml(path_or_text: str | Path) -> AdapterConfig:
    text = str(path_or_text)
    if isinstance(path_or_text, Path) or "\n" not in text:
        return config_from_dict(read_yaml(text))
    return config_from_dict(read_yaml("<text>", text))
