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

DEFAULT_TARGET = "random-qwen"
DEFAULT_DRAFT = "random-qwen-draft"


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
    _add(commands, "bench", "compare decoding methods on zoo clips or a dataset", _add_bench_args, run_bench)
    _add(commands, "bench-relevance", "how well LVSpec's rankings find the zoo's anchors", _add_relevance_args,
         run_bench_relevance)
    _add(commands, "bench-cost", "real-size costs, random weights", _add_bench_cost_args, run_bench_cost)
    zoo = commands.add_parser("zoo", help="the ShapesWorld zoo: data and tiny model pairs")
    zoo_commands = zoo.add_subparsers(dest="zoo_command", required=True)
    _add(zoo_commands, "train", "train the zoo's model pairs on this CPU (resumable)", _add_train_args, run_zoo_train)
    _add(zoo_commands, "eval", "model-card figures of a pair on held-out clips", _add_eval_args, run_zoo_eval)
    _add(zoo_commands, "sample", "write sample clips (mp4) with their questions", _add_sample_args, run_zoo_sample)
    return parser


def _add(commands, name: str, help_text: str, add_args: Callable, run: Callable) -> None:
    sub = commands.add_parser(name, help=help_text, description=help_text)
    add_args(sub)
    sub.set_defaults(run=run)


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", default=DEFAULT_TARGET, help="target model: built-in name, path or HF id")
    p.add_argument("--draft", default=DEFAULT_DRAFT, help="draft model: built-in name, path or HF id")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--device", default="cpu")


def _add_decode_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", default="sd", choices=["ar", "sd", "specvlm", "lvspec", "lvspec+specvlm"])
    p.add_argument("--num-draft-tokens", "-k", type=int, default=5, help="draft tokens per round")
    p.add_argument("--drop-rate", type=float, default=0.9, help="specvlm: share of video tokens dropped")
    p.add_argument("--attention-mass", type=float, default=0.5, help="specvlm: stage I attention share")
    p.add_argument("--pruning", default="staged", choices=["staged", "uniform", "none"], help="specvlm")
    _add_loose_args(p)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0, help="0 is greedy")
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--num-frames", type=int, default=8)
    p.add_argument("--size", type=int, default=112, help="frame width and height before model rounding")


def _add_loose_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lam", type=float, default=0.7, help="lvspec: share of positions verified loosely")
    p.add_argument("--top-n", type=int, default=10, help="lvspec: video similarities relevance averages")
    p.add_argument("--shift-window", type=int, default=2, help="lvspec: position-shift window (0: off)")
    p.add_argument("--shift-top-k", type=int, default=5, help="lvspec: rescued tokens are in the target's top-k")
    p.add_argument("--relevance", default="attention", choices=["attention", "embedding", "random"])


def _loose_knobs(args: argparse.Namespace) -> dict:
    """The LVSpec fields of SpecConfig, from `_add_loose_args`."""
    return {
        "lam": args.lam,
        "top_n": args.top_n,
        "shift_window": args.shift_window,
        "shift_top_k": args.shift_top_k,
        "relevance": args.relevance,
    }


def _add_generate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--video", required=True, help="local path, s3://bucket/key or allowlisted https URL")
    p.add_argument("--prompt", required=True)
    _add_model_args(p)
    _add_decode_args(p)
    p.add_argument("--s3-endpoint", default=None, help="S3 endpoint (default: AWS_ENDPOINT_URL)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def _add_demo_args(p: argparse.ArgumentParser) -> None:
    _add_model_args(p)
    p.add_argument("--seed", type=int, default=0, help="which sample clip")
    p.add_argument("--max-tokens", type=int, default=48)
    p.add_argument("--num-draft-tokens", "-k", type=int, default=5)


def _add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pair", default="all", help="qwen-tiny, llava-tiny or all")
    p.add_argument("--models", default="target,draft", help="which members of each pair to train")
    p.add_argument("--work-dir", default=".zoo-work", help="clip pool, tokenizer and resumable state")
    p.add_argument("--seed", type=int, default=0)


def _add_eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pair", required=True, help="qwen-tiny or llava-tiny")
    p.add_argument("--clips", type=int, default=200, help="held-out clips to evaluate")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")


def _add_bench_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pair", default=None, help="zoo pair (qwen-tiny, llava-tiny), for --target/--draft")
    p.add_argument("--target", default=DEFAULT_TARGET, help="target model: built-in name, path or HF id")
    p.add_argument("--draft", default=DEFAULT_DRAFT, help="draft model: built-in name, path or HF id")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--methods",
        default="ar,sd,specvlm",
        help="comma-separated methods, knobs after colons: e.g. sd,specvlm:drop=0.5,uniform (docs/bench.md)",
    )
    p.add_argument("--clips", type=int, default=20, help="held-out zoo clips (or dataset rows) to run")
    p.add_argument("--dataset", default=None, help="JSON lines of {video, prompt} instead of zoo clips")
    p.add_argument("--num-draft-tokens", "-k", type=int, default=5, help="default k of every method")
    p.add_argument("--drop-rate", type=float, default=0.9, help="default specvlm drop rate")
    _add_loose_args(p)
    p.add_argument("--frames", type=int, default=8, help="frames per video (more frames, more video tokens)")
    p.add_argument("--size", type=int, default=112, help="frame width and height before model rounding")
    p.add_argument("--max-tokens", type=int, default=80)
    p.add_argument("--json", default=None, help="write {meta, rows} here")
    p.add_argument("--plot", default=None, help="write a PNG of speedups, tau and accepted-length histograms")
    p.add_argument("--tradeoff-plot", default=None, help="write a PNG of retention against tau (lvspec)")


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
            **(_loose_knobs(args) if hasattr(args, "lam") else {}),
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


def _engine(args: argparse.Namespace, method: str, local_root: str = "/"):
    from specvid.config import ModelSpec, SourceConfig
    from specvid.engine import LocalEngine

    def spec(name: str) -> ModelSpec:
        return ModelSpec(name=name, dtype=args.dtype, device=args.device)

    # A command-line user may read any of their own files; servers set a narrower root.
    sources = SourceConfig(local_root=local_root, s3_endpoint_url=getattr(args, "s3_endpoint", None))
    draft = spec(args.draft) if method != "ar" else None
    return LocalEngine.from_specs(spec(args.target), draft, sources=sources)


def run_generate(args: argparse.Namespace) -> int:
    from specvid.spec.stats import SpecStats

    engine = _engine(args, args.method)
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
        engine = _engine(args, "sd", local_root=tmp)
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


def run_bench(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    import torch
    from tqdm import tqdm

    from specvid.bench.cases import dataset_cases, zoo_cases
    from specvid.bench.harness import run_methods, summarise
    from specvid.bench.methods import parse_methods
    from specvid.bench.report import format_table, plot, plot_tradeoff, write_json
    from specvid.config import VideoSampling
    from specvid.zoo.models import PAIRS

    if args.pair is not None:
        if args.pair not in PAIRS:
            print(f"unknown pair {args.pair!r}; known: {sorted(PAIRS)}", file=sys.stderr)
            return 2
        args.target, args.draft = PAIRS[args.pair].target.name, PAIRS[args.pair].draft.name
    defaults = {"num_draft_tokens": args.num_draft_tokens, "drop_rate": args.drop_rate, **_loose_knobs(args)}
    methods = parse_methods(args.methods, defaults)
    torch.set_num_threads(os.cpu_count() or 1)
    sampling = VideoSampling(num_frames=args.frames, width=args.size, height=args.size)
    with tempfile.TemporaryDirectory(prefix="specvid-bench-") as tmp:
        if args.dataset:
            cases, root = dataset_cases(Path(args.dataset), args.clips), "/"
        else:
            cases, root = zoo_cases(args.clips, args.frames, args.size, Path(tmp)), tmp
        engine = _engine(args, "sd", local_root=root)
        total = (len(methods) + ("ar" not in [m.label for m in methods])) * len(cases)
        with tqdm(total=total, desc="bench", unit="run") as bar:
            results = run_methods(
                engine, methods, cases, sampling, args.max_tokens, lambda label: _advance(bar, label)
            )
    rows = summarise(results, engine.draft.kv_bytes_per_token)
    name = args.pair or f"{args.target}+{args.draft}"
    for row in rows:
        row["pair"] = name
    print(f"\n{name}: {len(cases)} {'rows' if args.dataset else 'zoo clips'}, {args.frames} frames, "
          f"max {args.max_tokens} tokens\n")
    print(format_table(rows))
    meta = {
        "pair": name,
        "target": args.target,
        "draft": args.draft,
        "clips": len(cases),
        "frames": args.frames,
        "size": args.size,
        "max_tokens": args.max_tokens,
        "dataset": args.dataset,
        "threads": torch.get_num_threads(),
    }
    if args.json:
        write_json(Path(args.json), rows, meta)
    if args.plot:
        plot(Path(args.plot), rows, title=f"{name}, {len(cases)} clips, {args.frames} frames")
    if args.tradeoff_plot:
        title = f"{name}, {len(cases)} clips, {args.frames} frames"
        plot_tradeoff(Path(args.tradeoff_plot), rows, title=title)
    return 0


def _advance(bar, label: str) -> None:
    bar.set_postfix_str(label)
    bar.update()


def _add_relevance_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pair", default="qwen-tiny", help="zoo pair measured (its target and draft)")
    p.add_argument("--clips", type=int, default=30, help="held-out clips (the target's captions)")
    p.add_argument("--top-n", default="1,10,100", help="comma-separated N of the embedding ranking")
    p.add_argument("--lam", default="0.5,0.7,0.9", help="comma-separated lam of the precision/recall cut")
    p.add_argument("--num-draft-tokens", "-k", type=int, default=10, help="block length of the cut")
    p.add_argument("--json", default=None, help="write {meta, rows} here")


def run_bench_relevance(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tqdm import tqdm

    from specvid.bench.relevance import relevance_rows
    from specvid.bench.report import write_json
    from specvid.models.loader import load_model
    from specvid.zoo.models import PAIRS

    if args.pair not in PAIRS:
        print(f"unknown pair {args.pair!r}; known: {sorted(PAIRS)}", file=sys.stderr)
        return 2
    target, draft = load_model(PAIRS[args.pair].target.name), load_model(PAIRS[args.pair].draft.name)
    top_ns = [int(n) for n in args.top_n.split(",")]
    lams = [float(x) for x in args.lam.split(",")]
    with tqdm(total=args.clips, desc="captions", unit="clip") as bar:
        rows = relevance_rows(target, draft, args.clips, top_ns, lams, args.num_draft_tokens, bar.update)
    first = rows[0]
    print(f"\n{args.pair}: {args.clips} clips, {first['positions']} positions, {first['anchors']} anchors, "
          f"{first['mismatches']} mismatches, blocks of {args.num_draft_tokens}\n")
    header = (f"{'ranking':<16} {'lam':>4} {'AUROC':>6} {'AUROC mismatch':>14} {'precision':>9} {'recall':>6} "
              f"{'strict recall':>13}")
    print(header + "\n" + "-" * len(header))
    for r in rows:
        print(f"{r['ranking']:<16} {r['lam']:>4.1f} {r['auroc']:>6.3f} {r['auroc_mismatch']:>14.3f} "
              f"{r['precision']:>9.3f} {r['recall']:>6.3f} {r['strict_recall']:>13.3f}")
    if args.json:
        meta = {"pair": args.pair, "clips": args.clips, "k": args.num_draft_tokens}
        write_json(Path(args.json), rows, meta)
    return 0


def run_zoo_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch
    from tqdm import tqdm

    from specvid.zoo.models import PAIRS
    from specvid.zoo.train import TrainConfig, train_model

    pairs = list(PAIRS) if args.pair == "all" else [args.pair]
    unknown = [p for p in pairs if p not in PAIRS]
    if unknown:
        print(f"unknown pair {unknown[0]!r}; known: {sorted(PAIRS)}", file=sys.stderr)
        return 2
    torch.set_num_threads(os.cpu_count() or 1)
    work = Path(args.work_dir)
    base = TrainConfig(seed=args.seed)
    for pair in pairs:
        members = {"target": PAIRS[pair].target, "draft": PAIRS[pair].draft}
        for role in args.models.split(","):
            model = members[role]
            cfg = TrainConfig(**{**base.__dict__, "steps": model.train_steps})
            bars: dict[str, tqdm] = {}

            def progress(stage: str, step: int, total: int, loss: float) -> None:
                if stage not in bars:
                    bars[stage] = tqdm(total=total, desc=f"{model.name} {stage}", unit="step")
                bar = bars[stage]
                bar.n = step
                bar.set_postfix(loss=f"{loss:.3f}")
                bar.refresh()

            try:
                out = train_model(model, cfg, work, progress)
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


def run_zoo_sample(args: argparse.Namespace) -> int:
    from specvid.zoo.sample import write_samples

    records = write_samples(args.out, args.n, args.seed0)
    for r in records:
        print(f"{r['file']}: {r['caption_prompt']} | {len(r['questions'])} questions")
    return 0



def _add_bench_cost_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pair", default="qwen", choices=["qwen", "llava"],
                   help="qwen: Qwen2.5-VL-32B target, 7B draft; llava: LLaVA-OneVision-72B target, 7B draft")
    models = "qwen2.5-vl-7b, qwen2.5-vl-32b, qwen2.5-vl-72b, llava-ov-7b, llava-ov-72b"
    p.add_argument("--target", default=None, help=f"overrides the pair's target: {models}")
    p.add_argument("--draft", default=None, help=f"overrides the pair's draft: {models}")
    p.add_argument("--device", default=None, help="default: cuda if a GPU is visible, else cpu")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                   help="default: bfloat16 on cuda, float32 on cpu")
    p.add_argument("--layers", type=int, default=None,
                   help="decoder layers built per model (default: all on cuda, 2 on cpu); "
                        "figures are then also scaled to full depth")
    p.add_argument("--frames", type=int, default=64, help="video frames in the context")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per figure (default: 5 cuda, 3 cpu)")
    p.add_argument("--warmup", type=int, default=None, help="untimed runs first (default: 2 cuda, 1 cpu)")
    p.add_argument("--memory-limit", type=float, default=None, help="GiB the run may use (default: all free)")
    p.add_argument("--json", default=None, help="write {meta, rows} here")


def run_bench_cost(args: argparse.Namespace) -> int:
    """Real-size target and draft with random weights: decode, verify, pruned prefill, KV (docs/bench.md)."""
    from pathlib import Path

    import torch
    from pydantic import ValidationError

    from specvid.bench.cost import CostConfig, format_report, resolve_pair, run_cost
    from specvid.bench.report import write_json

    target, draft = resolve_pair(args.pair, args.target, args.draft)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    on_gpu = device.startswith("cuda")
    torch.set_num_threads(os.cpu_count() or 1)
    try:
        cfg = CostConfig(
            target=target,
            draft=draft,
            device=device,
            dtype=args.dtype or ("bfloat16" if on_gpu else "float32"),
            layers=args.layers if args.layers is not None else (None if on_gpu else 2),
            frames=args.frames,
            repeats=args.repeats if args.repeats is not None else (5 if on_gpu else 3),
            warmup=args.warmup if args.warmup is not None else (2 if on_gpu else 1),
            memory_limit=None if args.memory_limit is None else int(args.memory_limit * 2**30),
        )
    except ValidationError as e:
        first = e.errors()[0]
        print(f"error: --{str(first['loc'][0]).replace('_', '-')}: {first['msg']}", file=sys.stderr)
        return 2
    try:
        report = run_cost(cfg, progress=lambda message: print(message, file=sys.stderr, flush=True))
    except torch.cuda.OutOfMemoryError as e:
        reason = str(e).splitlines()[0] if str(e) else "out of memory"
        print(f"error: the device ran out of memory ({reason}); pass a smaller --layers", file=sys.stderr)
        return 2
    print(format_report(report))
    if args.json:
        write_json(Path(args.json), report["rows"], report["meta"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
