"""Command-line options shared by `specvid` commands: model specs, LVSpec knobs, the engine."""

from __future__ import annotations

import argparse

from specvid.errors import InvalidRequestError

DEFAULT_TARGET = "random-qwen"
DEFAULT_DRAFT = "random-qwen-draft"


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", default=DEFAULT_TARGET, help="target model: built-in name, path or HF id")
    p.add_argument("--draft", default=DEFAULT_DRAFT, help="draft model: built-in name, path or HF id")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--device", default="cpu")


def add_loose_args(p: argparse.ArgumentParser) -> None:
    from specvid.config import SpecConfig

    default = {name: field.default for name, field in SpecConfig.model_fields.items()}  # one source
    p.add_argument("--lam", type=float, default=default["lam"],
                   help="lvspec: share of positions verified loosely")
    p.add_argument("--top-n", type=int, default=default["top_n"],
                   help="lvspec: video similarities relevance averages")
    p.add_argument("--shift-window", type=int, default=default["shift_window"],
                   help="lvspec: position-shift window (0: off)")
    p.add_argument("--shift-top-k", type=int, default=default["shift_top_k"],
                   help="lvspec: rescues need the target's top-k")
    p.add_argument("--filler-ratio", type=float, default=default["filler_ratio"],
                   help="lvspec: a filler mismatch needs p(draft) >= ratio * p(target) (0: any)")
    p.add_argument("--relevance", default=default["relevance"], choices=["attention", "embedding", "random"])


def loose_knobs(args: argparse.Namespace) -> dict:
    """The LVSpec fields of SpecConfig, from `add_loose_args`."""
    return {
        "lam": args.lam,
        "top_n": args.top_n,
        "shift_window": args.shift_window,
        "shift_top_k": args.shift_top_k,
        "relevance": args.relevance,
        "filler_ratio": args.filler_ratio,
    }


def engine_from_args(args: argparse.Namespace, method: str, local_root: str = "/"):
    from specvid.config import ModelSpec, SourceConfig
    from specvid.engine import LocalEngine

    def spec(name: str) -> ModelSpec:
        return ModelSpec(name=name, dtype=args.dtype, device=args.device)

    # A command-line user may read any of their own files; servers set a narrower root.
    sources = SourceConfig(local_root=local_root, s3_endpoint_url=getattr(args, "s3_endpoint", None))
    draft = spec(args.draft) if method != "ar" else None
    return LocalEngine.from_specs(spec(args.target), draft, sources=sources)


def zoo_pair_names(pair: str) -> tuple[str, str]:
    """(target, draft) model names of a zoo pair; an unknown pair is a clear error."""
    from specvid.zoo.models import PAIRS

    if pair not in PAIRS:
        raise InvalidRequestError(f"unknown pair {pair!r}; known: {sorted(PAIRS)}")
    return PAIRS[pair].target.name, PAIRS[pair].draft.name
