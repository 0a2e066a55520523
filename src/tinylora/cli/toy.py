"""`tinylora toy`: the toy world: pretrain, eval."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _cmd_toy_pretrain(args: argparse.Namespace) -> int:
    from ..toy.backbone import PretrainConfig, pretrain

    overrides = {k: v for k, v in dict(seed=args.seed, steps=args.steps, batch_size=args.batch_size,
                                       p_step=args.p_step, doc_problems=args.doc_problems, p_instruct=args.p_instruct, lr=args.lr,
                                       hidden_size=args.hidden_size, num_layers=args.layers,
                                       num_heads=args.heads, threads=args.threads).items() if v is not None}
    if args.resume:
        saved = Path(args.out) / "pretrain_config.json"
        if not saved.is_file():
            raise FileNotFoundError(f"{args.out} is not a pretraining run (no pretrain_config.json); nothing to resume")
        if set(overrides) - {"threads"} or args.size or args.quick:
            raise ValueError("--resume continues the run exactly as it was configured; give only --out, --resume "
                             "and, to move it to another machine, --threads")
        cfg = PretrainConfig(**{**json.loads(saved.read_text()), **overrides})
    elif args.quick:
        cfg = PretrainConfig.quick(**overrides)
    elif args.size:
        cfg = PretrainConfig.sized(args.size, **overrides)
    else:
        cfg = PretrainConfig(**overrides)
    rec = pretrain(args.out, cfg, save_every=args.save_every, checkpoint_every=args.checkpoint_every,
                   resume=args.resume)
    print(f"saved toy backbone to {args.out}: {rec['parameters']} parameters, loss {rec['first_loss']:.3f} → "
          f"{rec['final_loss']:.3f} in {rec['seconds']:.0f} s")
    return 0


def _cmd_toy_eval(args: argparse.Namespace) -> int:
    from ..toy.evaluate import toy_report

    report = toy_report(args.model, n=args.n, seed=args.seed, batch_size=args.batch_size, adapter=args.adapter)
    print(json.dumps(report, indent=2))
    return 0


def _toy_sizes() -> dict:
    from ..toy.backbone import SIZES

    return SIZES


def add_parser(sub) -> None:
    toy = sub.add_parser("toy", help="the CPU world: pretrain or evaluate the toy backbone")
    toy_sub = toy.add_subparsers(dest="toy_command", required=True, metavar="TOY_COMMAND")
    s = toy_sub.add_parser("pretrain", help="pretrain the toy backbone from scratch (deterministic from --seed)",
                           description="Pretrains a small Qwen2-architecture model on arithmetic word problems whose "
                                       "solutions are step-by-step (p_step) or direct guesses. The shipped backbone "
                                       "was made with the defaults (see its pretrain.json).")
    s.add_argument("--out", required=True, help="output folder (model, tokenizer, pretrain.json, checkpoint.pt)")
    s.add_argument("--quick", action="store_true", help="a small model in about a minute (tests)")
    s.add_argument("--size", choices=list(_toy_sizes()),
                   help="a named width/depth (same data and recipe): " + ", ".join(
                       f"{k} = hidden {h}, {n} layers, {a} heads" for k, (h, n, a) in _toy_sizes().items()))
    s.add_argument("--hidden-size", type=int, help="width (overrides --size)")
    s.add_argument("--layers", type=int, help="depth (overrides --size)")
    s.add_argument("--heads", type=int, help="attention heads (overrides --size)")
    s.add_argument("--seed", type=int)
    s.add_argument("--steps", type=int)
    s.add_argument("--batch-size", type=int, help="documents per step")
    s.add_argument("--lr", type=float)
    s.add_argument("--p-step", type=float, help="share of step-by-step documents in the corpus")
    s.add_argument("--doc-problems", type=int,
                   help="up to K problems per document, all in the document's one style (default 3)")
    s.add_argument("--p-instruct", type=float,
                   help="share of documents opening with an instruction that names their style (default 0.5)")
    s.add_argument("--threads", type=int, help="torch threads (default 2). They change float sums, so the run's "
                   "weights depend on them; with --resume a new count is allowed, warned about and recorded "
                   "(pretrain.json: threads_from)")
    s.add_argument("--save-every", type=int, default=0, help="also save loadable step-N models to probe meanwhile")
    s.add_argument("--checkpoint-every", type=int, default=100, help="resumable checkpoint every N steps")
    s.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    s.set_defaults(func=_cmd_toy_pretrain)
    s = toy_sub.add_parser("eval", help="free (greedy, temperature 1) and forced step-by-step accuracy")
    s.add_argument("--model", default="toy", help="'toy' (shipped) or a folder")
    s.add_argument("--adapter", help="adapter file to load first")
    s.add_argument("--limit", "--n", dest="n", type=int, default=500, help="held-out problems (--n: the old name)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--batch-size", type=int, default=64)
    s.set_defaults(func=_cmd_toy_eval)
