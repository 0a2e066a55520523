"""Sweeps: grid expansion, skip-on-resume, and a table + PNG from a 2-point micro-sweep."""

import csv
import json

import pytest

from tinylora.trainers.sweep import SweepConfig, best_curves, parse_shard, run_sweep, report


def test_grid_expands_to_every_valid_combination():
    s = SweepConfig(base={"steps": 3}, grid={"adapter.method": ["tinylora", "lora_xs", "full"], "adapter.u": [1, 13],
                                             "lr": [0.01, 0.02], "seed": [0, 1]})
    pts = s.points()
    # tinylora: 2 u × 2 lr × 2 seeds; lora_xs and full have no u: 2 lr × 2 seeds each
    assert len(pts) == 8 + 4 + 4 and len({p.id for p in pts}) == len(pts)
    cfgs = [p.config("/tmp/sweep") for p in pts]
    assert {(c.adapter["method"], c.adapter.get("u"), c.lr, c.seed) for c in cfgs} == (
        {("tinylora", u, lr, sd) for u in (1, 13) for lr in (0.01, 0.02) for sd in (0, 1)}
        | {(m, None, lr, sd) for m in ("lora_xs", "full") for lr in (0.01, 0.02) for sd in (0, 1)})
    assert all(c.steps == 3 and c.out_dir.startswith("/tmp/sweep/points/") for c in cfgs)
    # sft_source only matters to SFT points: grpo + {reference, rejection} is one point, sft is two
    algos = SweepConfig(grid={"algo": ["grpo", "sft"], "sft_source": ["reference", "rejection"]}).points()
    assert sorted((p.values["algo"], p.values.get("sft_source")) for p in algos) == [
        ("grpo", None), ("sft", "reference"), ("sft", "rejection")]
    # es.* keys only matter to ES points: grpo × {openai, cma} is one point
    es = SweepConfig(grid={"algo": ["grpo", "es"], "es.method": ["openai", "cma"]}).points()
    assert sorted((p.values["algo"], p.values.get("es.method")) for p in es) == [
        ("es", "cma"), ("es", "openai"), ("grpo", None)]
    assert {p.config("/tmp/s").es["method"] for p in es if p.values["algo"] == "es"} == {"openai", "cma"}
    with pytest.raises(ValueError, match="tinylora or lora_xs"):  # an ES point with LoRA: refused up front
        SweepConfig(grid={"algo": ["es"], "adapter.method": ["lora"]})
    with pytest.raises(ValueError, match="non-empty list"):
        SweepConfig(grid={"lr": []})
    with pytest.raises(ValueError, match="unknown sweep key 'stepz'"):  # refused before anything runs
        SweepConfig(grid={"stepz": [1]})
    # a key no method has was dropped from every point without a word (1 point, the default u = 13)
    with pytest.raises(ValueError, match=r"unknown sweep key 'adapter.uu'; known adapter\.\*: .*\bu\b"):
        SweepConfig(grid={"adapter.uu": [1, 2]})
    with pytest.raises(ValueError, match="unknown sweep key 'es.sigmaa'"):
        SweepConfig(base={"algo": "es"}, grid={"es.sigmaa": [0.1]})
    # a key that only another method has is still dropped for this one: one grid crosses methods
    assert len(SweepConfig(grid={"adapter.method": ["tinylora", "lora"], "adapter.u": [1, 13]}).points()) == 3
    with pytest.raises(ValueError, match="storage_dtypes"):
        SweepConfig(storage_dtypes=["int8"])
    with pytest.raises(ValueError, match="bias the report"):
        SweepConfig(select_split="test")
    with pytest.raises(ValueError, match="series keys"):
        SweepConfig(grid={"lr": [0.1]}, series=["adapter.r"])
    assert parse_shard("1/3") == (1, 3)
    with pytest.raises(ValueError):
        parse_shard("3/3")


def test_micro_sweep_table_png_and_resume(quick_backbone, tmp_path):
    s = SweepConfig(
        base={"model": str(quick_backbone), "steps": 2, "prompts_per_step": 2, "group_size": 2, "max_new_tokens": 12,
              "eval_limit": 4, "eval_batch_size": 4, "eval_max_new_tokens": 12, "checkpoint_every": 0,
              "task_args": {"n_train": 50, "n_test": 10, "n_val": 4}},
        grid={"algo": ["grpo", "sft"]}, out_dir=str(tmp_path / "sw"), storage_dtypes=["fp32", "bf16"],
        select_split="validation")
    rows = run_sweep(s, progress=False)
    assert len(rows) == 4 and {(r["algo"], r["storage"]) for r in rows} == {
        (a, d) for a in ("grpo", "sft") for d in ("fp32", "bf16")}
    assert all(r["bytes"] == (52 if r["storage"] == "fp32" else 26) for r in rows)
    with open(tmp_path / "sw" / "results.csv") as f:
        assert len(list(csv.DictReader(f))) == 4
    path = report(s, rows, "tinylora sweep --config x.yaml")
    assert (tmp_path / "sw" / "accuracy_vs_bytes.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| tinylora | sft | bf16 | 13 | 26 |" in path.read_text()
    assert "measured on the 'validation' split; the accuracies shown are on 'test'" in path.read_text()
    page = (tmp_path / "sw" / "report.html").read_text()
    assert page.count("<table>") == 2 and '<img src="accuracy_vs_bytes.png"' in page and "<td>tinylora</td>" in page
    assert all(r["select_accuracy"] is not None for r in rows)
    sel = json.loads((tmp_path / "sw" / "points" / rows[0]["point"] / "select_validation_bf16" / "summary.json").read_text())
    assert sel["split"] == "validation" and sel["n"] == 4
    # resume: finished points are skipped; a point whose results vanished is the only one redone
    stamps = {p: (tmp_path / "sw" / "points" / p / "summary.json").stat().st_mtime_ns
              for p in {r["point"] for r in rows}}
    redo = next(iter(sorted(stamps)))
    (tmp_path / "sw" / "points" / redo / "sweep_point.json").unlink()
    (tmp_path / "sw" / "points" / redo / "summary.json").unlink()
    rows2 = run_sweep(s, progress=False)
    assert json.dumps(sorted(r["point"] for r in rows2)) == json.dumps(sorted(r["point"] for r in rows))
    for p, t in stamps.items():
        now = (tmp_path / "sw" / "points" / p / "summary.json").stat().st_mtime_ns
        assert (now != t) == (p == redo)


def _row(lr, seed, acc, sel=None, storage="fp32", config="{}", series=""):
    return {"method": "tinylora", "algo": "grpo", "storage": storage, "bytes": 52, "lr": lr, "seed": seed,
            "accuracy": acc, "ci95_low": acc - 0.1, "ci95_high": acc + 0.1, "select_accuracy": sel,
            "config": config, "series": series}


def test_best_lr_is_chosen_on_the_selection_split_and_reported_on_the_other():
    # lr 0.1 looks best on test (0.6) but lr 0.01 is best on validation (mean 0.5 vs 0.3)
    rows = [_row(0.1, 0, 0.6, 0.3), _row(0.1, 1, 0.6, 0.3), _row(0.01, 0, 0.4, 0.6), _row(0.01, 1, 0.2, 0.4)]
    assert best_curves(rows) == {"tinylora + grpo": [(52, pytest.approx(0.3), pytest.approx(0.2), pytest.approx(0.4))]}
    unselected = [{**r, "select_accuracy": None} for r in rows]  # no selection split: chosen on test itself
    assert best_curves(unselected)["tinylora + grpo"][0][1] == pytest.approx(0.6)
    # two configurations of one size (r=1, r=4): the best one is kept, or each is its own line as a series
    r1 = [_row(0.1, s, 0.2, 0.2, config='{"adapter.r": 1}', series="r=1") for s in (0, 1)]
    r4 = [_row(0.1, s, 0.5, 0.5, config='{"adapter.r": 4}', series="r=4") for s in (0, 1)]
    assert best_curves([{**r, "series": ""} for r in r1 + r4])["tinylora + grpo"][0][1] == pytest.approx(0.5)
    lines = best_curves(r1 + r4)
    assert lines["tinylora + grpo [r=1]"][0][1] == pytest.approx(0.2) and lines["tinylora + grpo [r=4]"][0][1] == pytest.approx(0.5)


def test_shipped_toy_sweep_config_is_valid():
    from pathlib import Path

    s = SweepConfig.from_yaml(Path(__file__).resolve().parents[1] / "configs" / "sweep-toy.yaml")
    cfgs = [p.config(s.out_dir) for p in s.points()]
    assert len(cfgs) == 20 and {c.algo for c in cfgs} == {"grpo", "sft"}
    assert len({c.out_dir for c in cfgs}) == 20


def test_dotted_adapter_key_alone_uses_the_default_adapter():
    from tinylora import config_from_dict

    cfgs = [config_from_dict(p.config("/tmp/sweep").adapter) for p in SweepConfig(grid={"adapter.u": [1, 13]}).points()]
    assert [(c.method, c.u, c.tying) for c in cfgs] == [
        ("tinylora", 1, "all"), ("tinylora", 13, "all")]


def test_yaml_syntax_error_is_one_line_with_file_line_and_column(tmp_path):
    from tinylora.trainers.config import TrainConfig

    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: 3\nlr: [1, 2\nseed: 0\n")
    for load in (TrainConfig.from_yaml, SweepConfig.from_yaml):
        with pytest.raises(ValueError, match=r"bad\.yaml:3:5: YAML syntax error") as e:
            load(bad)
        assert "\n" not in str(e.value)
