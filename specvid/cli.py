"""The `specvid` command line.

    specvid generate --video clip.mp4 --prompt "What moves?" --method sd \
        --target random-qwen --draft random-qwen-draft [--json]
    specvid demo            # a sample clip through ar and sd, side by side
    specvid bench ...       # decoding methods compared (docs/bench.md)
    specvid zoo sample|eval # ShapesWorld clips; model-card figures of a named pair
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Callable, Optional, Sequence

from specvid.bench import commands as bench_commands
from specvid.cli_options import (
    add_compile_arg,
    add_frame_args,
    add_method_args,
    add_model_args,
    add_sampling_args,
    default,
    engine_from_args,
    request_from_args,
    resolve_pair,
)
from specvid.config import DecodingConfig, ModelSpec
from specvid.models.registry import pair_names

DEMO_MAX_TOKENS = 48  # a caption's length: the demo shows both methods quickly


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_command(build_parser(), argv)


def run_command(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]] = None) -> int:
    """Parse, run the chosen command, and turn a SpecVidError into a message and exit code 2."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
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
    add_command(commands, "generate", "answer one prompt about one video", _add_generate_args, run_generate)
    add_command(commands, "demo", "run a sample clip through ar and sd", _add_demo_args, run_demo)
    bench_commands.register(commands, add_command)
    zoo = commands.add_parser("zoo", help="ShapesWorld clips and the shipped model pairs")
    zoo_commands = zoo.add_subparsers(dest="zoo_command", required=True)
    add_command(zoo_commands, "eval", "model-card figures of a pair on held-out clips", _add_eval_args, run_zoo_eval)
    add_command(zoo_commands, "sample", "write sample clips (mp4) with their questions", _add_sample_args, run_zoo_sample)
    return parser


def print_figures(figures: dict, path: Optional[str]) -> int:
    """Print a command's figures as JSON, and write them to `path` too when one is given."""
    print(json.dumps(figures, indent=2))
    if path:
        with open(path, "w") as f:
            json.dump(figures, f, indent=2)
    return 0


def add_command(commands, name: str, help_text: str, add_args: Callable, run: Callable) -> None:
    sub = commands.add_parser(name, help=help_text, description=help_text)
    add_args(sub)
    sub.set_defaults(run=run)


def _add_generate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--video", required=True, help="local path, s3://bucket/key or allowlisted https URL")
    p.add_argument("--prompt", required=True)
    add_model_args(p)
    add_method_args(p)
    add_sampling_args(p)
    add_frame_args(p)
    p.add_argument("--s3-endpoint", default=None, help="S3 endpoint (default: AWS_ENDPOINT_URL)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def _add_demo_args(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    p.add_argument("--seed", type=int, default=0, help="which sample clip")
    p.add_argument("--max-tokens", type=int, default=DEMO_MAX_TOKENS)
    p.add_argument("--num-draft-tokens", "-k", type=int, default=default(DecodingConfig, "num_draft_tokens"))


def _add_eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pair", required=True, help="qwen-tiny or llava-tiny")
    p.add_argument("--clips", type=int, default=200, help="held-out clips to evaluate")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    add_compile_arg(p, on=True)


def _add_sample_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="directory to write clips and samples.jsonl into")
    p.add_argument("--n", type=int, default=4)
    p.add_argument("--seed0", type=int, default=0, help="index of the first eval clip")


def run_generate(args: argparse.Namespace) -> int:
    from specvid.decoding.stats import SpecStats

    resolve_pair(args)
    uses_draft = DecodingConfig(method=args.method).uses_draft
    engine = engine_from_args(args, uses_draft)
    request = request_from_args(args, args.video, args.prompt, args.method)
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
        "draft": args.draft if DecodingConfig(method=args.method).uses_draft else None,
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

    from specvid.shapesworld.clips import encode_clip_mp4, make_clip
    from specvid.shapesworld.world import split_seeds

    resolve_pair(args)
    clip = make_clip(split_seeds("eval", args.seed + 1)[args.seed])
    with tempfile.TemporaryDirectory(prefix="specvid-demo-") as tmp:
        path = Path(tmp) / "sample.mp4"
        path.write_bytes(encode_clip_mp4(clip))
        prompt = clip.caption_prompt
        print(f"clip: {path.name} (seed {clip.seed}); reference: {clip.caption}")
        print(f"target {args.target}, draft {args.draft}, k = {args.num_draft_tokens}\n")
        engine = engine_from_args(args, uses_draft=True, local_root=tmp)
        results = {}
        for method in ("ar", "sd"):
            request = request_from_args(args, str(path), prompt, method)
            engine.generate(request)  # warm-up, so both methods are timed warm
            results[method] = engine.generate(request)
            print(f"{method}: {results[method].text!r}")
            print(f"    {_stats_line(results[method].stats)}")
    ar, sd = results["ar"], results["sd"]
    speedup = sd.stats.decode_tokens_per_s / ar.stats.decode_tokens_per_s if ar.stats.decode_tokens_per_s else 0
    print(f"\nidentical output: {sd.token_ids == ar.token_ids}; decode speedup sd/ar: {speedup:.2f}x")
    return 0


def run_zoo_eval(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from specvid.bench.card import eval_seeds, evaluate_pair
    from specvid.models.loader import load_model

    target_name, draft_name = pair_names(args.pair)
    torch.set_num_threads(os.cpu_count() or 1)
    target = load_model(ModelSpec(name=target_name, compile=args.compile))
    draft = load_model(ModelSpec(name=draft_name, compile=args.compile, draft_loops=(5, 10)))  # the card's k
    with tqdm(total=args.clips, desc=f"eval {args.pair}", unit="clip") as bar:
        figures = evaluate_pair(target, draft, eval_seeds(args.clips), progress=bar.update)
    figures = {"pair": args.pair, **figures}
    return print_figures(figures, args.json)


def run_zoo_sample(args: argparse.Namespace) -> int:
    from specvid.shapesworld.sample import write_samples

    records = write_samples(args.out, args.n, args.seed0)
    for r in records:
        print(f"{r['file']}: {r['caption_prompt']} | {len(r['questions'])} questions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
