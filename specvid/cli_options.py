"""Command-line options shared by `specvid` commands.

Every default and every choice comes from the config models (`specvid.config`), so a flag and
the REST field it stands for can never disagree.
"""

from __future__ import annotations

import argparse
from typing import Any, Optional, Sequence, get_args

from pydantic import BaseModel

from specvid.config import (
    DecodingConfig,
    Method,
    ModelSpec,
    Relevance,
    SamplingParams,
    VideoSampling,
)
from specvid.models.registry import DEFAULT_PAIR, PAIRS, pair_names

DEFAULT_TARGET, DEFAULT_DRAFT = PAIRS[DEFAULT_PAIR]
LOOSE_FIELDS = ("lam", "top_n", "shift_window", "shift_top_k", "filler_ratio", "relevance")


def default(model: type[BaseModel], field: str) -> Any:
    """The default of one config field."""
    return model.model_fields[field].get_default(call_default_factory=True)


def choices(model: type[BaseModel], field: str) -> list[str]:
    """The values a Literal config field admits."""
    return list(get_args(model.model_fields[field].annotation))


def add_model_args(p: argparse.ArgumentParser, compile_models: bool = False) -> None:
    """Model flags; `compile_models` is the default of --compile (on where many requests follow)."""
    p.add_argument("--pair", default=None, help=f"a named pair ({', '.join(sorted(PAIRS))}); sets --target and --draft")
    p.add_argument("--target", default=DEFAULT_TARGET, help="target model: built-in name, path or HF id")
    p.add_argument("--draft", default=DEFAULT_DRAFT, help="draft model: built-in name, path or HF id")
    p.add_argument("--dtype", default=default(ModelSpec, "dtype"), choices=choices(ModelSpec, "dtype"))
    p.add_argument("--device", default=default(ModelSpec, "device"))
    add_compile_arg(p, compile_models)


def add_compile_arg(p: argparse.ArgumentParser, on: bool) -> None:
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=on,
                   help="compile the decode forward at start-up (seconds to a minute; same output)")


def resolve_pair(args: argparse.Namespace) -> None:
    """`--pair` names both models; it wins over `--target` / `--draft`."""
    if getattr(args, "pair", None) is not None:
        args.target, args.draft = pair_names(args.pair)


def add_method_args(p: argparse.ArgumentParser, method: bool = True) -> None:
    """The DecodingConfig knobs; `method=False` for commands that take a list of methods instead."""
    if method:
        p.add_argument("--method", default=default(DecodingConfig, "method"), choices=list(get_args(Method)))
    p.add_argument("--num-draft-tokens", "-k", type=int, default=default(DecodingConfig, "num_draft_tokens"),
                   help="draft tokens per round (the most, with --draft-confidence)")
    p.add_argument("--draft-confidence", type=float, default=default(DecodingConfig, "draft_confidence"),
                   help="adaptive draft length: stop a round after a draft token below this probability")
    p.add_argument("--drop-rate", type=float, default=default(DecodingConfig, "drop_rate"),
                   help="specvlm: share of video tokens dropped")
    p.add_argument("--attention-mass", type=float, default=default(DecodingConfig, "attention_mass"),
                   help="specvlm: stage I attention share")
    p.add_argument("--pruning", default=default(DecodingConfig, "pruning"), choices=choices(DecodingConfig, "pruning"),
                   help="specvlm")
    add_loose_args(p)


def add_loose_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lam", type=float, default=default(DecodingConfig, "lam"),
                   help="lvspec: share of positions verified loosely")
    p.add_argument("--top-n", type=int, default=default(DecodingConfig, "top_n"),
                   help="lvspec: video similarities relevance averages")
    p.add_argument("--shift-window", type=int, default=default(DecodingConfig, "shift_window"),
                   help="lvspec: position-shift window (0: off)")
    p.add_argument("--shift-top-k", type=int, default=default(DecodingConfig, "shift_top_k"),
                   help="lvspec: rescues need the target's top-k")
    p.add_argument("--filler-ratio", type=float, default=default(DecodingConfig, "filler_ratio"),
                   help="lvspec: a filler mismatch needs p(draft) >= ratio * p(target) (0: any)")
    p.add_argument("--relevance", default=default(DecodingConfig, "relevance"), choices=list(get_args(Relevance)))


def add_sampling_args(p: argparse.ArgumentParser, max_tokens: Optional[int] = None) -> None:
    """SamplingParams flags; `max_tokens` overrides the default where a command needs its own."""
    p.add_argument("--max-tokens", type=int, default=max_tokens or default(SamplingParams, "max_tokens"))
    p.add_argument("--temperature", type=float, default=default(SamplingParams, "temperature"), help="0 is greedy")
    p.add_argument("--top-k", type=int, default=default(SamplingParams, "top_k"))
    p.add_argument("--top-p", type=float, default=default(SamplingParams, "top_p"))
    p.add_argument("--seed", type=int, default=default(SamplingParams, "seed"))


def add_frame_args(p: argparse.ArgumentParser, frames_flag: str = "--num-frames") -> None:
    p.add_argument(frames_flag, dest="num_frames", type=int, default=default(VideoSampling, "num_frames"),
                   help="frames sampled per video (more frames, more video tokens)")
    p.add_argument("--size", type=int, default=default(VideoSampling, "width"),
                   help="frame width and height before model rounding")


def method_knobs(args: argparse.Namespace) -> dict:
    """The DecodingConfig fields `add_method_args` set (all but the method)."""
    names = ("num_draft_tokens", "draft_confidence", "drop_rate", "attention_mass", "pruning", *LOOSE_FIELDS)
    return {name: getattr(args, name) for name in names if hasattr(args, name)}


def request_from_args(args: argparse.Namespace, video: str, prompt: str, method: str) -> dict:
    """A GenerationRequest body from the flags above; flags a command lacks keep their defaults."""
    sampling = ("max_tokens", "temperature", "top_k", "top_p", "seed")
    size = getattr(args, "size", None)
    return {
        "video": video,
        "prompt": prompt,
        "decoding": {"method": method, **method_knobs(args)},
        "sampling": {name: getattr(args, name) for name in sampling if hasattr(args, name)},
        "video_sampling": {
            **({"num_frames": args.num_frames} if hasattr(args, "num_frames") else {}),
            **({"width": size, "height": size} if size is not None else {}),
        },
    }


def engine_from_args(args: argparse.Namespace, uses_draft: bool, local_root: str = "/",
                     draft_lengths: Sequence[int] = ()):
    """The engine a command runs; `draft_lengths`: the k its rounds draft, whose whole-proposal
    loops the draft compiles at load when the command compiles."""
    from specvid.config import SourceConfig
    from specvid.engine import LocalEngine

    def spec(name: str, **fields) -> ModelSpec:
        return ModelSpec(name=name, dtype=args.dtype, device=args.device, compile=args.compile, **fields)

    # A command-line user may read any of their own files; servers set a narrower root.
    sources = SourceConfig(local_root=local_root, s3_endpoint_url=getattr(args, "s3_endpoint", None))
    default_k = DecodingConfig.model_fields["num_draft_tokens"].default
    lengths = tuple(sorted(set(draft_lengths) | {getattr(args, "num_draft_tokens", default_k)}))
    sampled = getattr(args, "temperature", 0.0) > 0
    draft = spec(args.draft, draft_loops=lengths, sampled_draft_loops=sampled) if uses_draft else None
    return LocalEngine.from_specs(spec(args.target), draft, sources=sources)
