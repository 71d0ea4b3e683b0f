"""The `specvid bench`, `bench-plot`, `bench-relevance`, `bench-cost`, `bench-forwards` and
`bench-serve` commands (docs/bench.md)."""

from __future__ import annotations

import argparse
import os
import sys

from specvid.cli_options import (
    add_frame_args,
    add_method_args,
    add_model_args,
    engine_from_args,
    method_knobs,
    resolve_pair,
)
from specvid.models.registry import pair_names

# Long enough that decode, not prefill, dominates a row's time; captions end before it.
BENCH_MAX_TOKENS = 80


def register(commands, add) -> None:
    """Add the bench commands to `commands` with the CLI's `add(commands, name, help, args, run)`."""
    add(commands, "bench", "compare decoding methods on zoo clips or a dataset", _add_bench_args, run_bench)
    add(commands, "bench-plot", "table and plots of saved `bench --json` files", _add_plot_args,
        run_bench_plot)
    add(commands, "bench-relevance", "how well LVSpec's rankings find the zoo's anchors", _add_relevance_args,
        run_bench_relevance)
    add(commands, "bench-cost", "real-size costs, random weights", _add_bench_cost_args, run_bench_cost)
    add(commands, "bench-forwards", "ms per decode step and verify block: transformers, eager, compiled",
        _add_bench_forwards_args, run_bench_forwards)
    add(commands, "bench-serve", "throughput and latency under concurrent clients: a deployment or LocalEngine",
        _add_bench_serve_args, run_bench_serve)


def _add_bench_args(p: argparse.ArgumentParser) -> None:
    add_model_args(p, compile_models=True)
    p.add_argument(
        "--methods",
        default="ar,sd,specvlm",
        help="comma-separated methods, knobs after colons: e.g. sd,specvlm:drop=0.5,uniform (docs/bench.md)",
    )
    p.add_argument("--clips", type=int, default=20, help="held-out zoo clips (or dataset rows) to run")
    p.add_argument("--dataset", default=None, help="JSON lines of {video, prompt} instead of zoo clips")
    add_method_args(p, method=False)  # each knob is the default of every listed method
    add_frame_args(p, frames_flag="--frames")
    p.add_argument("--max-tokens", type=int, default=BENCH_MAX_TOKENS)
    p.add_argument("--json", default=None, help="write {meta, rows} here")
    _add_plot_outputs(p)


def _add_plot_outputs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--plot", default=None, help="write a PNG of speedups, tau and accepted-length histograms")
    p.add_argument("--tradeoff-plot", default=None, help="write a PNG of retention against tau (lvspec)")


def _write_plots(args: argparse.Namespace, rows, title: str) -> None:
    from pathlib import Path

    from specvid.bench.report import plot, plot_tradeoff

    if args.plot:
        plot(Path(args.plot), rows, title=title)
    if args.tradeoff_plot:
        plot_tradeoff(Path(args.tradeoff_plot), rows, title=title)


def run_bench(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    import torch
    from tqdm import tqdm

    from specvid.bench.cases import dataset_cases, zoo_cases
    from specvid.bench.harness import BASELINE, run_methods, summarise
    from specvid.bench.methods import parse_methods
    from specvid.bench.report import format_table, write_json
    from specvid.config import VideoSampling

    resolve_pair(args)
    methods = parse_methods(args.methods, method_knobs(args))
    torch.set_num_threads(os.cpu_count() or 1)
    sampling = VideoSampling(num_frames=args.num_frames, width=args.size, height=args.size)
    with tempfile.TemporaryDirectory(prefix="specvid-bench-") as tmp:
        if args.dataset:
            cases, root = dataset_cases(Path(args.dataset), args.clips), "/"
        else:
            cases, root = zoo_cases(args.clips, args.num_frames, args.size, Path(tmp)), tmp
        lengths = [m.decoding.num_draft_tokens for m in methods if m.decoding.uses_draft and m.peer is None]
        engine = engine_from_args(args, uses_draft=True, local_root=root, draft_lengths=lengths)
        total = (len(methods) + (BASELINE.label not in [m.label for m in methods])) * len(cases)
        with tqdm(total=total, desc="bench", unit="run") as bar:
            results = run_methods(
                engine, methods, cases, sampling, args.max_tokens, lambda label: _advance(bar, label)
            )
    rows = summarise(results, engine.draft.kv_bytes_per_token)
    name = args.pair or f"{args.target}+{args.draft}"
    for row in rows:
        row["pair"] = name
    print(f"\n{name}: {len(cases)} {'rows' if args.dataset else 'zoo clips'}, {args.num_frames} frames, "
          f"max {args.max_tokens} tokens\n")
    print(format_table(rows))
    for row in rows:
        if row.get("unavailable"):
            print(f"{row['method']}: transformers refused this peer here ({row['unavailable']})")
    meta = {
        "pair": name,
        "target": args.target,
        "draft": args.draft,
        "clips": len(cases),
        "frames": args.num_frames,
        "size": args.size,
        "max_tokens": args.max_tokens,
        "dataset": args.dataset,
        "threads": torch.get_num_threads(),
    }
    if args.json:
        write_json(Path(args.json), rows, meta)
    _write_plots(args, rows, f"{name}, {len(cases)} clips, {args.num_frames} frames")
    return 0


def _advance(bar, label: str) -> None:
    bar.set_postfix_str(label)
    bar.update()


def _add_plot_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("json", nargs="+", help="`specvid bench --json` files of one pair, clips and frames")
    _add_plot_outputs(p)


def run_bench_plot(args: argparse.Namespace) -> int:
    """Merge saved bench runs (e.g. a main table and a sweep) into one table and the plots."""
    from pathlib import Path

    from specvid.bench.report import format_table, read_runs

    meta, rows = read_runs([Path(name) for name in args.json])
    print(format_table(rows))
    _write_plots(args, rows, f"{meta['pair']}, {meta['clips']} clips, {meta['frames']} frames")
    return 0


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

    from specvid.bench.relevance import format_relevance, relevance_rows
    from specvid.bench.report import write_json
    from specvid.models.loader import load_model

    target, draft = (load_model(name) for name in pair_names(args.pair))
    top_ns = [int(n) for n in args.top_n.split(",")]
    lams = [float(x) for x in args.lam.split(",")]
    with tqdm(total=args.clips, desc="captions", unit="clip") as bar:
        rows = relevance_rows(target, draft, args.clips, top_ns, lams, args.num_draft_tokens, bar.update)
    print(f"\n{args.pair}: {args.clips} clips, blocks of {args.num_draft_tokens}\n")
    print(format_relevance(rows))
    if args.json:
        meta = {"pair": args.pair, "clips": args.clips, "k": args.num_draft_tokens}
        write_json(Path(args.json), rows, meta)
    return 0


def _add_bench_forwards_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pair", default="qwen-tiny", help="zoo pair measured (its target and draft)")
    p.add_argument("--num-draft-tokens", "-k", type=int, default=5, help="a verify block is k + 1 tokens")
    p.add_argument("--generated", type=int, default=40, help="tokens generated after the prompt so far")
    p.add_argument("--rounds", type=int, default=10, help="timed rounds; each times every way in turn")
    p.add_argument("--calls", type=int, default=20, help="calls per way per round")
    p.add_argument("--json", default=None, help="write {meta, rows} here")


def run_bench_forwards(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from specvid.bench.forwards import format_forwards, forward_rows
    from specvid.bench.report import write_json
    from specvid.config import ModelSpec
    from specvid.models.loader import load_model

    torch.set_num_threads(os.cpu_count() or 1)
    target_name, draft_name = pair_names(args.pair)
    target = load_model(ModelSpec(name=target_name, compile=True))
    draft = load_model(ModelSpec(name=draft_name, compile=True, draft_loops=(args.num_draft_tokens,)))
    rows, totals = forward_rows(target, draft, args.num_draft_tokens, args.generated, args.rounds, args.calls)
    print(f"\n{args.pair}: median ms per forward, {args.rounds} x {args.calls} calls per way\n")
    print(format_forwards(rows, totals))
    if args.json:
        meta = {"pair": args.pair, "k": args.num_draft_tokens, "generated": args.generated,
                "threads": torch.get_num_threads(), "summary": totals}
        write_json(Path(args.json), rows, meta)
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
    p.add_argument("--repeats", type=int, default=None,
                   help="timed runs per figure (default: 20 cuda, 3 cpu)")
    p.add_argument("--warmup", type=int, default=None, help="untimed runs first (default: 5 cuda, 1 cpu)")
    p.add_argument("--clock", default="wall", choices=["wall", "gpu-busy"],
                   help="wall: wall time, kernel-launch gaps included; gpu-busy (GPU only): summed kernel "
                        "time, what a launch-free engine (CUDA graphs) would see")
    p.add_argument("--memory-limit", type=float, default=None, help="GiB the run may use (default: all free)")
    p.add_argument("--json", default=None, help="write {meta, rows} here")


def run_bench_cost(args: argparse.Namespace) -> int:
    """Real-size target and draft with random weights: decode, verify, pruned prefill, KV (docs/bench.md)."""
    from pathlib import Path

    import torch
    from pydantic import ValidationError

    from specvid.bench.cost import CostConfig, run_cost
    from specvid.bench.cost_report import format_report
    from specvid.bench.real_models import resolve_pair
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
            repeats=args.repeats if args.repeats is not None else (20 if on_gpu else 3),
            warmup=args.warmup if args.warmup is not None else (5 if on_gpu else 1),
            clock=args.clock,
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


def _add_bench_serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default=None,
                   help="a running deployment, e.g. http://127.0.0.1:8000 (`make run`); without it the "
                        "clients share an in-process LocalEngine of --target / --draft")
    add_model_args(p, compile_models=True)
    p.add_argument("--compare", "--overhead", dest="compare", action="store_true",
                   help="with --url: run every level through LocalEngine (--target / --draft) too and print served "
                        "and in-process side by side (with the k each chose), and the Serve overhead per round")
    p.add_argument("--methods", default="ar,sd",
                   help="comma-separated methods with knobs as in `specvid bench` (e.g. sd,sd:draft_ahead=true)")
    p.add_argument("--concurrency", default="1,4,8,16", help="comma-separated numbers of concurrent clients")
    p.add_argument("--requests-per-client", type=int, default=3, help="requests each client sends per level")
    p.add_argument("--max-tokens", type=int, default=48, help="tokens each request decodes (EOS ignored)")
    p.add_argument("--videos", default=None,
                   help="comma-separated video URIs the deployment can read (default: `make run`'s sample clips "
                        "in s3://BUCKET); in-process, held-out zoo clips")
    p.add_argument("--bucket", default="specvid-samples", help="the bucket of the default sample clips")
    p.add_argument("--api-key-env", default="SPECVID_API_KEY", help="environment variable holding the API key")
    p.add_argument("--max-seconds", type=float, default=300.0, help="stop sending at a level after this long")
    p.add_argument("--json", default=None, help="write {meta, rows, compared, overhead} here")
    p.add_argument("--plot", default=None, help="write a PNG of throughput and latency against concurrency")


def run_bench_serve(args: argparse.Namespace) -> int:
    import json
    import tempfile
    from pathlib import Path

    import torch

    from specvid.bench import serving
    from specvid.bench.report import format_table
    from specvid.shapesworld.clips import make_clip
    from specvid.shapesworld.world import split_seeds

    resolve_pair(args)
    torch.set_num_threads(os.cpu_count() or 1)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    levels = sorted({int(c) for c in args.concurrency.split(",")} | {1})
    prompt = make_clip(split_seeds("eval", 1)[0]).caption_prompt
    with tempfile.TemporaryDirectory(prefix="specvid-bench-serve-") as tmp:
        if args.url:
            videos = args.videos.split(",") if args.videos else serving.sample_uris(args.bucket)
            client = serving.HttpClient(args.url, os.environ.get(args.api_key_env), max_clients=max(levels))
        else:
            client, videos = _engine_client(args, Path(tmp))
        rows, alone = serving.run_levels(client, methods, levels, videos, prompt, args.max_tokens,
                                         args.requests_per_client, args.max_seconds)
        overhead, compared = [], []
        if args.url and args.compare:
            local, local_videos = _engine_client(args, Path(tmp), videos)
            local_rows, _ = serving.run_levels(local, methods, levels, local_videos, prompt, args.max_tokens,
                                               args.requests_per_client, args.max_seconds)
            compared = serving.side_by_side(rows, local_rows)
            overhead = serving.overhead_rows(alone, local, local_videos, prompt, args.max_tokens)
    where = args.url or f"LocalEngine {args.target} + {args.draft}"
    print(f"\n{where}: {args.max_tokens} tokens per request\n")
    print(serving.format_serve_table(rows))
    if compared:
        print("\nServed against in process (LocalEngine, same requests, same clients):\n")
        print(format_table(compared, serving.SIDE_BY_SIDE_COLUMNS))
    if overhead:
        print("\nServe against LocalEngine, one client, same requests:\n")
        print(format_table(overhead, serving.OVERHEAD_COLUMNS))
    meta = {"target": args.target, "draft": args.draft, "url": args.url, "max_tokens": args.max_tokens,
            "videos": len(videos), "requests_per_client": args.requests_per_client}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows, "compared": compared,
                                                "overhead": overhead}, indent=2) + "\n")
    if args.plot:
        serving.plot_serving(Path(args.plot), rows, where)
    return 0


def _engine_client(args: argparse.Namespace, tmp, uris=None):
    """A LocalEngine client over held-out zoo clips, or over the sample clips `uris` name
    (written here from their seeds: the same bytes the deployment reads from S3), each request
    reading and decoding its video as a served one does."""
    from specvid.bench import serving
    from specvid.shapesworld.sample import SAMPLE_CLIPS, write_samples

    files = {record["file"]: str(tmp / record["file"]) for record in write_samples(tmp, SAMPLE_CLIPS)}
    engine = engine_from_args(args, uses_draft=True, local_root=str(tmp))
    uris = uris or list(files.values())
    local = {uri: files.get(uri.rsplit("/", 1)[-1]) for uri in uris}
    missing = [uri for uri, path in local.items() if path is None]
    if missing:
        raise SystemExit(f"--compare compares the sample clips only; not a sample clip: {', '.join(missing)}")
    return serving.EngineClient(engine, local), uris  # videos fetched and decoded per request, as served
