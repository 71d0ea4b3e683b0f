"""The `specvid` command line.

    specvid generate --video clip.mp4 --prompt "What moves?" --method sd \
        --target random-qwen --draft random-qwen-draft [--json]
    specvid demo            # a sample clip through ar and sd, side by side
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Callable, Optional, Sequence

from specvid.bench import commands as bench_commands
from specvid.cli_options import add_loose_args, add_model_args, engine_from_args, loose_knobs


def main(argv: Optional[Sequence[str]] = None) -> int:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    parser = build_parser()
    args = parser.parse_args(argv)
    from specvid.errors import SpecVidError

    try:
        return args.run(args)
    except SpecVidError as e:
        print(f"error ({e.status_code} {e.code}): {e.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="specvid", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    _add(commands, "generate", "answer one prompt about one video", _add_generate_args, run_generate)
    _add(commands, "demo", "run a sample clip through ar and sd", _add_demo_args, run_demo)
    bench_commands.register(commands, _add)
    zoo = commands.add_parser("zoo", help="the ShapesWorld zoo: data and tiny model pairs")
    zoo_commands = zoo.add_subparsers(dest="zoo_command", required=True)
    _add(zoo_commands, "train", "train the zoo's model pairs on this CPU (resumable)", _add_train_args, run_zoo_train)
    _add(zoo_commands, "eval", "model-card figures of a pair on held-out clips", _add_eval_args, run_zoo_eval)
    _add(zoo_commands, "sample", "write sample clips (mp4) with their questions", _add_sample_args, run_zoo_sample)
    _add(
        zoo_commands,
        "diagnose",
        "where a target's lookups fail: its video features, colour by kind, option letters",
        _add_diagnose_args,
        run_zoo_diagnose,
    )
    _add(
        zoo_commands,
        "letter-drill",
        "train a fresh model of a zoo architecture on naming multiple-choice letters alone (text only)",
        _add_letter_drill_args,
        run_zoo_letter_drill,
    )
    return parser


def _add(commands, name: str, help_text: str, add_args: Callable, run: Callable) -> None:
    sub = commands.add_parser(name, help=help_text, description=help_text)
    add_args(sub)
    sub.set_defaults(run=run)


def _add_decode_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", default="sd", choices=["ar", "sd", "specvlm", "lvspec", "lvspec+specvlm"])
    p.add_argument("--num-draft-tokens", "-k", type=int, default=5, help="draft tokens per round")
    p.add_argument("--drop-rate", type=float, default=0.9, help="specvlm: share of video tokens dropped")
    p.add_argument("--attention-mass", type=float, default=0.5, help="specvlm: stage I attention share")
    p.add_argument("--pruning", default="staged", choices=["staged", "uniform", "none"], help="specvlm")
    add_loose_args(p)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0, help="0 is greedy")
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--num-frames", type=int, default=8)
    p.add_argument("--size", type=int, default=112, help="frame width and height before model rounding")


def _add_generate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--video", required=True, help="local path, s3://bucket/key or allowlisted https URL")
    p.add_argument("--prompt", required=True)
    add_model_args(p)
    _add_decode_args(p)
    p.add_argument("--s3-endpoint", default=None, help="S3 endpoint (default: AWS_ENDPOINT_URL)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def _add_demo_args(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    p.add_argument("--seed", type=int, default=0, help="which sample clip")
    p.add_argument("--max-tokens", type=int, default=48)
    p.add_argument("--num-draft-tokens", "-k", type=int, default=5)


def _add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pair", default="all", help="qwen-tiny, llava-tiny or all")
    p.add_argument("--models", default="target,draft", help="which members of each pair to train")
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
        help="export the models into DIR/<name> instead of the package's checkpoints",
    )


def _add_eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pair", required=True, help="qwen-tiny or llava-tiny")
    p.add_argument("--clips", type=int, default=200, help="held-out clips to evaluate")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")


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


def _add_sample_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="directory to write clips and samples.jsonl into")
    p.add_argument("--n", type=int, default=4)
    p.add_argument("--seed0", type=int, default=0, help="index of the first eval clip")


def _request(args: argparse.Namespace, video: str, prompt: str, method: str) -> dict:
    return {
        "video": video,
        "prompt": prompt,
        "spec": {
            "method": method,
            "num_draft_tokens": args.num_draft_tokens,
            "drop_rate": getattr(args, "drop_rate", 0.9),
            "attention_mass": getattr(args, "attention_mass", 0.5),
            "pruning": getattr(args, "pruning", "staged"),
            **(loose_knobs(args) if hasattr(args, "lam") else {}),
        },
        "sampling": {
            "max_tokens": args.max_tokens,
            "temperature": getattr(args, "temperature", 0.0),
            "top_k": getattr(args, "top_k", 0),
            "top_p": getattr(args, "top_p", 1.0),
            "seed": args.seed,
        },
        "video_sampling": {
            "num_frames": getattr(args, "num_frames", 8),
            "width": getattr(args, "size", 112),
            "height": getattr(args, "size", 112),
        },
    }


def run_generate(args: argparse.Namespace) -> int:
    from specvid.spec.stats import SpecStats

    engine = engine_from_args(args, args.method)
    request = _request(args, args.video, args.prompt, args.method)
    if args.json:
        result = engine.generate(request)
        print(json.dumps(_summary(result, args), indent=2))
        return 0
    stats = SpecStats()
    for chunk in engine.stream(request, stats=stats):
        print(chunk.text, end="", flush=True)
    print()
    print(_stats_line(stats), file=sys.stderr)
    return 0


def _summary(result, args: argparse.Namespace) -> dict:
    s = result.stats
    return {
        **result.to_dict(),
        "method": args.method,
        "target": args.target,
        "draft": args.draft if args.method != "ar" else None,
        "tau": s.tau,
        "rounds": s.rounds,
        "decode_tokens_per_s": s.decode_tokens_per_s,
    }


def _stats_line(s) -> str:
    return (
        f"[{s.emitted} tokens | tau {s.tau:.2f} over {s.rounds} rounds | "
        f"decode {s.decode_tokens_per_s:.1f} tok/s | video {s.video_s * 1e3:.0f} ms | "
        f"prefill {s.prefill_s * 1e3:.0f} ms | decode {s.decode_s * 1e3:.0f} ms]"
    )


def run_demo(args: argparse.Namespace) -> int:
    """Write a ShapesWorld clip, answer its caption prompt with ar and sd, compare."""
    import tempfile
    from pathlib import Path

    from specvid.zoo.shapesworld import encode_clip_mp4, make_clip, split_seeds

    clip = make_clip(split_seeds("eval", args.seed + 1)[args.seed])
    with tempfile.TemporaryDirectory(prefix="specvid-demo-") as tmp:
        path = Path(tmp) / "sample.mp4"
        path.write_bytes(encode_clip_mp4(clip))
        prompt = clip.caption_prompt
        print(f"clip: {path.name} (seed {clip.seed}); reference: {clip.caption}")
        print(f"target {args.target}, draft {args.draft}, k = {args.num_draft_tokens}\n")
        engine = engine_from_args(args, "sd", local_root=tmp)
        results = {}
        for method in ("ar", "sd"):
            request = _request(args, str(path), prompt, method)
            engine.generate(request)  # warm-up, so both methods are timed warm
            results[method] = engine.generate(request)
            print(f"{method}: {results[method].text!r}")
            print(f"    {_stats_line(results[method].stats)}")
    ar, sd = results["ar"], results["sd"]
    speedup = sd.stats.decode_tokens_per_s / ar.stats.decode_tokens_per_s if ar.stats.decode_tokens_per_s else 0
    print(f"\nidentical output: {sd.token_ids == ar.token_ids}; decode speedup sd/ar: {speedup:.2f}x")
    return 0


def run_zoo_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch
    from tqdm import tqdm

    from specvid.zoo.models import PAIRS
    from specvid.zoo.train import TrainConfig, train_model, with_overrides

    pairs = list(PAIRS) if args.pair == "all" else [args.pair]
    unknown = [p for p in pairs if p not in PAIRS]
    if unknown:
        print(f"unknown pair {unknown[0]!r}; known: {sorted(PAIRS)}", file=sys.stderr)
        return 2
    roles = args.models.split(",")
    if not set(roles) <= {"target", "draft"}:
        print(f"--models takes target, draft or both, got {args.models!r}", file=sys.stderr)
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


def run_zoo_eval(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from specvid.models.loader import load_model
    from specvid.zoo.evaluate import eval_seeds, evaluate_pair
    from specvid.zoo.models import PAIRS

    if args.pair not in PAIRS:
        print(f"unknown pair {args.pair!r}; known: {sorted(PAIRS)}", file=sys.stderr)
        return 2
    torch.set_num_threads(os.cpu_count() or 1)
    pair = PAIRS[args.pair]
    target, draft = load_model(pair.target.name), load_model(pair.draft.name)
    with tqdm(total=args.clips, desc=f"eval {args.pair}", unit="clip") as bar:
        figures = evaluate_pair(target, draft, eval_seeds(args.clips), progress=bar.update)
    figures = {"pair": args.pair, **figures}
    print(json.dumps(figures, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)
    return 0


def run_zoo_diagnose(args: argparse.Namespace) -> int:
    import torch

    from specvid.engine import LocalEngine
    from specvid.models.loader import load_model
    from specvid.zoo.diagnose import choice_letters, colour_lookups, feature_probe
    from specvid.zoo.evaluate import eval_seeds
    from specvid.zoo.shapesworld import split_seeds

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
    print(json.dumps(figures, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)
    return 0


def run_zoo_letter_drill(args: argparse.Namespace) -> int:
    import torch

    from specvid.errors import InvalidRequestError
    from specvid.zoo.letter_drill import letter_drill, record_line
    from specvid.zoo.models import MODELS

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


def run_zoo_sample(args: argparse.Namespace) -> int:
    from specvid.zoo.sample import write_samples

    records = write_samples(args.out, args.n, args.seed0)
    for r in records:
        print(f"{r['file']}: {r['caption_prompt']} | {len(r['questions'])} questions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
