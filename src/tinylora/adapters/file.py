"""The adapter file: a safetensors file holding only the trained values, plus JSON metadata.

Payload per method (stored in fp32, bf16 or fp16):

- ``tinylora``: ``v`` (groups × u) — 13 parameters are 26 bytes in bf16, 52 in fp32.
- ``lora_xs``: ``R`` (modules × r × r).
- ``lora``: ``lora_A.<module>`` (r × in), ``lora_B.<module>`` (out × r).
- ``full``: ``delta.<module>`` (out × in).

Everything else (U, Σ, V, P) is recomputed from the base model and the recorded seed. The
metadata (safetensors' string map, key ``tinylora``) records the config, the module order, the
storage dtype, a SHA-256 of the payload bytes, and the base fingerprint
(:mod:`tinylora.adapters.fingerprint`). Loading never unpickles; every problem raises :class:`AdapterError`.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._core.dtypes import torch_dtype
from .._core.errors import TinyLoRAError
from . import fingerprint as fp
from . import methods
from .config import AdapterConfig, config_from_dict
from .model import adapted_modules, attach, detach, get_root, is_attached

FORMAT_VERSION = 1


class AdapterError(TinyLoRAError):
    """An adapter file cannot be used: unreadable, corrupted, from another version or base model."""


@dataclass
class AdapterInfo:
    """An adapter file's contents, readable without a model (what ``tinylora inspect`` prints)."""

    path: str
    meta: dict[str, Any]
    tensors: dict[str, torch.Tensor]  # as stored (storage dtype)

    @property
    def config(self) -> AdapterConfig:
        return config_from_dict(self.meta["config"])

    @property
    def num_parameters(self) -> int:
        return sum(t.numel() for t in self.tensors.values())

    @property
    def payload_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())


def _payload_digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].contiguous()
        h.update(key.encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _payload(model: nn.Module) -> dict[str, torch.Tensor]:
    """The trained tensors (fp32, CPU) under their file keys (each method says which: :mod:`.methods`)."""
    root = get_root(model)
    with torch.no_grad():
        return methods.of(root.config).payload(root.v, adapted_modules(model))


def _assign_payload(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    root = get_root(model)
    with torch.no_grad():
        methods.of(root.config).assign(root.v, adapted_modules(model), tensors)


def _base_name(model: nn.Module) -> str | None:
    cfg = getattr(model, "config", None)
    return getattr(cfg, "_name_or_path", None) or None


def save(model: nn.Module, path: str | os.PathLike, dtype: str = "fp32") -> Path:
    """Write the adapter of ``model`` to ``path`` (atomically: a crash never leaves half a file)."""
    from safetensors.torch import save_file

    from .. import __version__

    root = get_root(model)
    tensors = {k: t.to(torch_dtype(dtype)).contiguous() for k, t in _payload(model).items()}
    for k, t in tensors.items():
        if not torch.isfinite(t).all():
            raise AdapterError(f"refusing to save: tensor {k!r} has NaN/inf values (diverged training?)")
    meta = {
        "format_version": FORMAT_VERSION,
        "tinylora_version": __version__,
        "method": root.config.method,
        "config": root.config.to_dict(),
        "n_tie": getattr(root, "n_tie", None),
        "target_modules": root.names,
        "dtype": dtype,
        "payload_sha256": _payload_digest(tensors),
        "base_model": _base_name(model),
        "architectures": getattr(getattr(model, "config", None), "architectures", None),
        "fingerprint": root.fingerprint,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        # One metadata key: safetensors writes a multi-key map in per-process hash order, and the
        # same adapter must give the same bytes (resume equivalence, content addressing).
        save_file(tensors, tmp, metadata={"tinylora": json.dumps(meta, sort_keys=True)})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def read(path: str | os.PathLike) -> AdapterInfo:
    """Read and validate an adapter file on its own (no model needed)."""
    from safetensors import safe_open

    path = str(path)
    if not os.path.isfile(path):
        raise AdapterError(f"{path}: no such adapter file")
    try:
        with safe_open(path, framework="pt") as f:
            raw_meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for bad headers/truncation
        raise AdapterError(
            f"{path}: not a readable safetensors file (truncated or corrupted?): {e}. Re-download or re-save it."
        ) from e
    if "tinylora" not in raw_meta:
        raise AdapterError(f"{path}: a safetensors file, but not a tinylora adapter (no 'tinylora' metadata)")
    try:
        meta = json.loads(raw_meta["tinylora"])
    except json.JSONDecodeError as e:
        raise AdapterError(f"{path}: corrupted tinylora metadata: {e}") from e
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise AdapterError(
            f"{path}: adapter format version {version!r} is not supported by this tinylora "
            f"(reads version {FORMAT_VERSION}); upgrade tinylora or re-export the adapter"
        )
    for key in ("method", "config", "target_modules", "dtype", "payload_sha256", "fingerprint"):
        if key not in meta:
            raise AdapterError(f"{path}: metadata lacks {key!r}; the file is corrupted or was not written by tinylora")
    if _payload_digest(tensors) != meta["payload_sha256"]:
        raise AdapterError(f"{path}: payload checksum mismatch: the trained values were corrupted after saving")
    for k, t in tensors.items():
        if not torch.isfinite(t.float()).all():
            raise AdapterError(f"{path}: tensor {k!r} holds NaN/inf values; this adapter is unusable")
    try:
        config_from_dict(meta["config"])
    except (ValueError, TypeError) as e:
        raise AdapterError(f"{path}: invalid config in metadata: {e}") from e
    return AdapterInfo(path, meta, tensors)


def _expected_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(t.shape) for k, t in _payload(model).items()}


def _module_mismatch(file_names: list[str], model_names: list[str]) -> str:
    """What differs between the file's target modules and the model's, with examples both ways."""
    only_file = [n for n in file_names if n not in set(model_names)][:3]
    only_model = [n for n in model_names if n not in set(file_names)][:3]
    parts = [f"the adapter's {len(file_names)} target modules do not match this model's {len(model_names)}"]
    if only_file:
        parts.append(f"in the file, not here: {only_file}")
    if only_model:
        parts.append(f"here, not in the file: {only_model}")
    if not only_file and not only_model:
        first = next(i for i, (a, b) in enumerate(zip(file_names, model_names)) if a != b)
        parts.append(f"same modules in another order (first difference at #{first}: file {file_names[first]!r}, "
                     f"here {model_names[first]!r})")
    return "; ".join(parts) + "; it was trained on another architecture or with other target_modules"


def _verify(model: nn.Module, info: AdapterInfo, strict: bool) -> None:
    import warnings

    root = get_root(model)
    meta, path = info.meta, info.path
    if root.config.to_dict() != meta["config"]:
        raise AdapterError(
            f"{path}: adapter config {meta['config']} differs from the model's attached config "
            f"{root.config.to_dict()}; load into a model without an adapter, or attach the file's config"
        )
    if root.names != meta["target_modules"]:
        raise AdapterError(f"{path}: {_module_mismatch(meta['target_modules'], root.names)}")
    expected = _expected_shapes(model)
    got = {k: tuple(t.shape) for k, t in info.tensors.items()}
    if expected != got:
        bad = sorted(k for k in set(expected) | set(got) if expected.get(k) != got.get(k))[:5]
        raise AdapterError(
            f"{path}: tensor shapes do not match this model (e.g. {[(k, got.get(k), expected.get(k)) for k in bad]} "
            "as (name, file, expected)); it was trained on a model of another size"
        )
    weights_differ, factors_differ = fp.compare(meta["fingerprint"], root.fingerprint)
    if weights_differ:
        raise AdapterError(
            f"{path}: this adapter was trained on another base model ({meta.get('base_model') or 'unnamed'}); "
            f"{len(weights_differ)} of {len(root.names)} target weights differ (e.g. {weights_differ[0]}). "
            "Load the base model it was trained on."
        )
    if factors_differ:
        msg = (
            f"{path}: the base weights match, but the top-r singular vectors of {len(factors_differ)} modules "
            f"(e.g. {factors_differ[0]}) differ from those at training time: their singular values are nearly "
            "equal, so rounding (another precision or device) rotates them and the update would differ there."
        )
        if strict:
            raise AdapterError(msg + " Pass strict=False to load anyway.")
        warnings.warn(msg, stacklevel=3)


def load(model: nn.Module, path: str | os.PathLike, *, strict: bool = True, svd_method: str = "auto") -> nn.Module:
    """Load an adapter file into ``model`` (attaching its config if the model has no adapter yet).

    On any error the model is left as it was.
    """
    info = read(path)
    attached_here = False
    if not is_attached(model):
        attach(model, info.config, svd_method=svd_method)
        attached_here = True
    try:
        _verify(model, info, strict)
        _assign_payload(model, {k: t.float() for k, t in info.tensors.items()})
    except BaseException:
        if attached_here:
            detach(model)
        raise
    return model
