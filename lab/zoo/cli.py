"""The zoo's lab commands: train the shipped pairs, diagnose a target, drill option letters.

    python -m lab.zoo train --pair qwen-tiny                 # resumable, on this CPU
    python -m lab.zoo diagnose --model qwen-tiny --clips 40  # where a target's lookups fail
    python -m lab.zoo letter-drill --model qwen-tiny         # can the architecture copy letters?
    python -m lab.zoo distill --pair qwen-tiny               # a draft distilled from its target

These are experiments, not part of the installed `specvid` command; `specvid zoo eval` measures
what they produce. Their history and figures: `lab/zoo/HISTORY.md`, `docs/zoo.md`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional, Sequence

from specvid.cli import add_command, print_figures, run_command


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.zoo", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    add_command(commands, "train", "train the zoo's model pairs on this CPU (resumable)", _add_train_args, run_train)
    add_command(
        commands,
        "diagnose",
        "where a target's lookups fail: its video features, colour by kind, option letters",
        _add_diagnose_args,
        run_diagnose,
    )
    add_command(
        commands,
        "letter-drill",
        "train a fresh model of a zoo architecture on naming multiple-choice letters alone (text only)",
        _add_letter_drill_args,
        run_letter_drill,
    )
    add_command(
        commands,
        "distill",
        "a draft with the target's frozen vision tower, distilled from the target's logits; then its card",
        _add_distill_args,
        run_distill,
    )
    return run_command(parser, argv)


def _add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pair", default="all", help="qwen-tiny, llava-tiny or all")
    p.add_argument("--models", default="target", help="which members of each pair to train (target, draft)")
    p.add_argument("--work-dir", default=".zoo-work", help="clip pool, tokenizer and resumable state")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change one TrainConfig setting of the recipe, e.g. sibling_turns=true or vision.steps=800",
    )
    p.add_argument(
        "--out-dir",
        default=None,
        help="export the models into DIR/<name> instead of the shipped checkpoints (specvid/models/zoo)",
    )


def _add_diagnose_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="a zoo model name or a checkpoint directory")
    p.add_argument("--clips", type=int, default=40, help="held-out clips for each measurement")
    p.add_argument("--probe-clips", type=int, default=300, help="training clips the linear probes are fitted on")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")


def _add_letter_drill_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="a zoo model name: its architecture, seed and tokenizer")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--eval-every", type=int, default=100, help="steps between held-out evaluations")
    p.add_argument("--eval-questions", type=int, default=256, help="held-out drills (eval-split clips)")
    p.add_argument("--json", default=None, help="also write the records to this JSON file")


def run_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch
    from tqdm import tqdm

    from lab.zoo.recipes import PAIRS
    from lab.zoo.train import TrainConfig, train_model, with_overrides

    pairs = list(PAIRS) if args.pair == "all" else [args.pair]
    unknown = [p for p in pairs if p not in PAIRS]
    if unknown:
        print(f"unknown pair {unknown[0]!r}; known: {sorted(PAIRS)}", file=sys.stderr)
        return 2
    roles = args.models.split(",")
    if not set(roles) <= {"target", "draft"}:
        print(f"--models takes target, draft or both, got {args.models!r}", file=sys.stderr)
        return 2
    if "draft" in roles and args.out_dir is None:
        print("the shipped drafts are distilled from their targets (python -m lab.zoo distill); "
              "`train --models draft` builds a first-zoo draft and needs --out-dir", file=sys.stderr)
        return 2
    try:
        with_overrides(TrainConfig(), args.overrides)  # refuse a bad setting before any work
    except ValueError as error:
        print(f"--set: {error}", file=sys.stderr)
        return 2
    torch.set_num_threads(os.cpu_count() or 1)
    work = Path(args.work_dir)
    for pair in pairs:
        members = {"target": PAIRS[pair].target, "draft": PAIRS[pair].draft}
        for role in roles:
            model = members[role]
            recipe = TrainConfig(seed=args.seed, steps=model.train_steps)
            cfg = with_overrides(recipe, [*model.settings, *args.overrides])
            out_dir = Path(args.out_dir) / model.name if args.out_dir else None
            bars: dict[str, tqdm] = {}

            def progress(stage: str, step: int, total: int, loss: float) -> None:
                if stage not in bars:
                    bars[stage] = tqdm(total=total, desc=f"{model.name} {stage}", unit="step")
                bar = bars[stage]
                bar.n = step
                bar.set_postfix(loss=f"{loss:.3f}")
                bar.refresh()

            try:
                out = train_model(model, cfg, work, progress, out_dir=out_dir)
            finally:
                for bar in bars.values():
                    bar.close()
            print(f"{model.name}: exported to {out}")
    return 0


def run_diagnose(args: argparse.Namespace) -> int:
    import torch

    from lab.zoo.diagnose import choice_letters, colour_lookups, feature_probe
    from specvid.bench.card import eval_seeds
    from specvid.engine import LocalEngine
    from specvid.models.loader import load_model
    from specvid.shapesworld.world import split_seeds

    torch.set_num_threads(os.cpu_count() or 1)
    adapter = load_model(args.model)
    held_out = eval_seeds(args.clips)
    figures = {
        "model": args.model,
        "clips": args.clips,
        "feature_probe": feature_probe(adapter, split_seeds("train", args.probe_clips), held_out),
        "colour_lookups_by_shapes": colour_lookups(LocalEngine(adapter), held_out),
        "choice_letters_reasoned": choice_letters(adapter, held_out, reasoned=True),
        "choice_letters_plain": choice_letters(adapter, held_out, reasoned=False),
    }
    return print_figures(figures, args.json)


def run_letter_drill(args: argparse.Namespace) -> int:
    import torch

    from lab.zoo.letter_drill import letter_drill, record_line
    from lab.zoo.recipes import MODELS
    from specvid.errors import InvalidRequestError

    if args.model not in MODELS:
        raise InvalidRequestError(f"--model must be a zoo model name ({', '.join(MODELS)}), got {args.model!r}")
    torch.set_num_threads(os.cpu_count() or 1)
    records = []
    for record in letter_drill(args.model, args.steps, args.batch_size, args.lr, args.eval_every, args.eval_questions):
        print(record_line(record), flush=True)
        records.append(record)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": args.model, "batch_size": args.batch_size, "lr": args.lr, "records": records}, f, indent=2)
    return 0


def _add_distill_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pair", required=True, help="qwen-tiny or llava-tiny")
    p.add_argument("--steps", type=int, default=None, help="language steps (default: the pair's shipped recipe)")
    p.add_argument("--kl-weight", type=float, default=1.0, help="weight of KL(target || draft) beside the CE")
    p.add_argument("--out-dir", default=".zoo-work/distilled", help="export the draft into DIR/<pair>-draft")
    p.add_argument("--clips", type=int, default=40, help="held-out clips of the card measured afterwards")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="change one TrainConfig setting, e.g. batch_size=8")
    p.add_argument("--json", default=None, help="also write the card's figures to this JSON file")


def run_distill(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    import torch

    from lab.zoo.distill import distill_draft
    from lab.zoo.recipes import DISTILLED
    from lab.zoo.train import TrainConfig, with_overrides
    from specvid.bench.card import eval_seeds, evaluate_pair
    from specvid.config import ModelSpec
    from specvid.models.loader import load_model

    torch.set_num_threads(os.cpu_count() or 1)
    recipe_steps, recipe_settings = DISTILLED[args.pair]
    steps = args.steps or recipe_steps
    cfg = with_overrides(TrainConfig(steps=steps, seed=args.seed, bf16_autocast=False),
                         [*recipe_settings, *args.overrides])
    started = time.time()

    def progress(step: int, total: int, kl: float, ce: float) -> None:
        if step % 20 == 0 or step == total:
            print(f"step {step}/{total}  kl {kl:.3f}  ce {ce:.3f}  {time.time() - started:.0f} s", flush=True)

    path = distill_draft(args.pair, cfg, Path(args.out_dir), args.kl_weight, progress)
    target = load_model(ModelSpec(name=args.pair, compile=True))
    draft = load_model(ModelSpec(name=str(path), compile=True))
    figures = evaluate_pair(target, draft, eval_seeds(args.clips))
    figures = {"pair": args.pair, "draft": str(path), "steps": steps,
               "train_minutes": (time.time() - started) / 60, **figures}
    return print_figures(figures, args.json)
