import json
import subprocess
import sys

import pytest
import torch

import tinylora
from tinylora.cli.main import main
from conftest import logits, tokens


def test_demo_inspect_export(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
    adapter = tmp_path / "demo" / "skill.safetensors"
    capsys.readouterr()
    assert main(["inspect", str(adapter)]) == 0
    out = capsys.readouterr().out
    assert "method:          tinylora" in out and "parameters:      13" in out and "26 bytes (bf16)" in out
    info = tinylora.read(adapter)
    values = info.tensors["v"].float().flatten().tolist()
    assert f"v = {json.dumps([values])}" in out  # the trained numbers themselves
    assert main(["inspect", "--json", str(adapter)]) == 0
    dumped = json.loads(capsys.readouterr().out)
    assert dumped["meta"]["fingerprint"] == info.meta["fingerprint"]

    out_dir = tmp_path / "merged"
    assert main(["export", "--model", str(tmp_path / "demo" / "base"), "--adapter", str(adapter),
                 "--format", "merged", "--out", str(out_dir)]) == 0
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(tmp_path / "demo" / "base"))
    tinylora.load(base, adapter)
    merged = AutoModelForCausalLM.from_pretrained(str(out_dir))
    x = tokens()
    assert torch.allclose(logits(merged, x), logits(base, x), atol=1e-5)


def test_errors_are_one_clear_line(tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"garbage!")
    assert main(["inspect", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tinylora inspect: error:") and "truncated or corrupted" in err


def test_console_script_help():
    out = subprocess.run([sys.executable, "-m", "tinylora", "--help"], capture_output=True, text=True, check=True)
    for cmd in ("inspect", "export", "demo"):
        assert cmd in out.stdout
    with pytest.raises(SystemExit):
        main(["export", "--model", "x"])  # missing required arguments: argparse explains


def test_train_refuses_bad_input_before_loading_the_model(tmp_path, capsys, monkeypatch):
    import tinylora.models.loading

    def no_load(*a, **k):
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr(tinylora.models.loading, "load_model", no_load)
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("{}\n")
    cases = [
        (["train", "lr=-1"], "lr must be > 0"),
        (["train", "--out", str(run)], "already holds a run"),
        (["train", "--resume", str(tmp_path)], "is not a run directory"),
        (["train", "--task", "no-such-task", "--out", str(tmp_path / "x")], "unknown task"),
        (["train", "--model", "toy", "model=toy"], "both given"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (argv, err)


def test_train_common_options_are_overrides(tmp_path):
    from tinylora.cli.main import build_parser, train_config_from_args

    parse = build_parser().parse_args
    cfg = train_config_from_args(parse(["train", "--model", "m", "--task", "gsm8k", "--out", str(tmp_path / "r"),
                                        "--algo", "sft", "steps=2"]))
    assert (cfg.model, cfg.task, cfg.out_dir, cfg.algo, cfg.steps) == ("m", "gsm8k", str(tmp_path / "r"), "sft", 2)
    for sub, extra in (("train", []), ("eval", ["--model", "m", "--task", "t"])):  # the same common options
        ns = parse([sub, *extra])
        assert all(hasattr(ns, k) for k in ("model", "task", "out"))


def test_help_is_instant_without_torch():
    code = ("import sys, contextlib, io\nfrom tinylora.cli.main import main\n"
            "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n    main(['train', '--help'])\n"
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'help imported torch'\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_subpackages_are_attributes():
    code = "import tinylora; assert tinylora.tasks.get('arith', n_test=1).name == 'arith'; tinylora.tasks.arith_problems.problems"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_api_names_survive_submodule_imports():
    code = ("import tinylora, tinylora.adapters.export, tinylora.cli.main, tinylora.adapters.model\n"
            "assert callable(tinylora.export) and tinylora.export.__module__ == 'tinylora.adapters.export'\n"
            "assert callable(tinylora.attach) and callable(tinylora.load)\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_demos_own_output_evaluates_and_a_folder_without_a_tokenizer_is_named(tmp_path, capsys):
    """eval --model demo/base --adapter demo/skill.safetensors crashed (transformers built an empty tokenizer)."""
    import shutil

    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
    tasks_file = tmp_path / "t.jsonl"
    tasks_file.write_text(json.dumps({"prompt": "abc", "answer": "d"}) + "\n")
    common = ["--task", "jsonl", "--task-arg", f"path={tasks_file}", "--max-new-tokens", "4"]
    assert main(["eval", "--model", str(tmp_path / "demo" / "base"), "--adapter",
                 str(tmp_path / "demo" / "skill.safetensors"), *common]) == 0
    bare = tmp_path / "bare"
    shutil.copytree(tmp_path / "demo" / "base", bare)
    for f in bare.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "vocab", "merges")):
            f.unlink()
    capsys.readouterr()
    assert main(["eval", "--model", str(bare), *common]) == 2
    err = capsys.readouterr().err
    assert "has no tokenizer" in err and len(err.strip().splitlines()) == 1


def test_export_never_writes_into_a_folder_of_the_users_files(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("mine")
    args = ["export", "--model", str(tmp_path / "nothing-here"), "--adapter", str(tmp_path / "demo" / "skill.safetensors"),
            "--format", "merged", "--out", str(mine)]
    assert main(args) == 2  # refused before the (here impossible) model load
    assert "not an empty folder" in capsys.readouterr().err and [p.name for p in mine.iterdir()] == ["keep.txt"]
    args[4] = str(tmp_path / "no.safetensors")
    assert main(args) == 2 and "no such adapter file" in capsys.readouterr().err


def test_other_option_paths_refuse_bad_values_in_one_line(tmp_path, capsys):
    """The sweep of the other key=value and option paths (issue: a run's record cannot lie)."""
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
    base = str(tmp_path / "demo" / "base")
    cases = [(["eval", "--model", base, "--task", "gsm8k", "--task-arg", "mdoe=strict"], "unknown option(s) ['mdoe']"),
             (["train", "task=gsm8k", "task_args={mdoe: strict}", f"out_dir={tmp_path / 'r'}"], "unknown option(s)"),
             (["serve", "--model", base, "--adapters", str(tmp_path), "--timeout", "-1"], "--timeout"),
             (["serve", "--model", base, "--adapters", str(tmp_path), "--timeout", "nan"], "--timeout"),
             (["toy", "eval", "--n", "0"], "n (held-out problems)"), (["toy", "eval", "--batch-size", "0"], "batch_size"),
             (["train", "es.sigmaa=1"], "unknown es key")]
    capsys.readouterr()
    for argv, msg in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert msg in err and len(err.strip().splitlines()) == 1, (argv, err)


def test_one_option_means_one_thing_on_every_command():
    """--task-arg and --dtype on train as on eval; --device/--dtype/--no-cache on serve; toy eval --limit."""
    from tinylora.cli.main import build_parser, train_config_from_args

    p = build_parser()
    cfg = train_config_from_args(p.parse_args(["train", "--task", "gsm8k", "--task-arg", "mode=strict",
                                               "--dtype", "bf16", "steps=1"]))
    assert cfg.task_args == {"mode": "strict"} and cfg.dtype == "bf16"
    for cmd in (["eval", "--model", "m", "--task", "t"], ["serve", "--model", "m", "--adapters", "d"],
                ["export", "--model", "m", "--adapter", "a", "--format", "merged", "--out", "o"]):
        ns = p.parse_args([*cmd, "--dtype", "bf16"])
        assert ns.dtype == "bf16"
    assert p.parse_args(["serve", "--model", "m", "--adapters", "d", "--device", "cpu", "--no-cache"]).no_cache
    assert p.parse_args(["toy", "eval", "--limit", "7"]).n == 7


def test_eval_run_takes_the_runs_own_settings(tmp_path, capsys):
    """tinylora eval --run RUN: the run's model, task and options, adapter and evaluation settings;
    an option given on the command line wins."""
    from tinylora.cli.eval_cmd import apply_run_defaults
    from tinylora.cli.main import build_parser
    from tinylora.trainers.config import TrainConfig

    run = tmp_path / "run"
    run.mkdir()
    TrainConfig(model="toy", task="gsm8k", task_args={"mode": "strict"}, eval_limit=7, eval_max_new_tokens=33,
                eval_split="test", out_dir=str(run)).to_yaml(run / "config.yaml")
    p = build_parser()
    ns = p.parse_args(["eval", "--run", str(run)])
    with pytest.raises(ValueError, match="not written adapter.safetensors"):
        apply_run_defaults(ns)
    (run / "adapter.safetensors").write_bytes(b"")
    ns = p.parse_args(["eval", "--run", str(run), "--max-new-tokens", "5"])
    apply_run_defaults(ns)
    assert (ns.model, ns.task, ns.limit, ns.max_new_tokens, ns.adapter) == ("toy", "gsm8k", 7, 5,
                                                                           str(run / "adapter.safetensors"))
    assert ns.run_task_args == {"mode": "strict"} and ns.batch_size == 64 and ns.dtype == "fp32"
    plain = p.parse_args(["eval", "--model", "m", "--task", "t"])
    apply_run_defaults(plain)  # without --run: the plain defaults, as before
    assert (plain.split, plain.batch_size, plain.max_new_tokens, plain.dtype, plain.engine) == ("test", 8, 256, "fp32",
                                                                                               "auto")
    assert main(["eval", "--task", "gsm8k"]) == 2 and "needs --model and --task" in capsys.readouterr().err
