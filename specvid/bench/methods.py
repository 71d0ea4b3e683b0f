"""Method specs of `specvid bench --methods`: a name plus per-method knobs.

Syntax: methods are separated by commas; knobs follow a method's name after colons,

    ar,sd,specvlm,specvlm:drop=0.5,uniform,lvspec:lam=0.9:w=3,lvspec+specvlm,random:lam=0.5

Each knob is a `DecodingConfig` field or one of the short names below; a knob given on the command
line (`--num-draft-tokens`, `--drop-rate`, `--lam`, `--top-n`, `--shift-window`, ...) is the
default for every method that does not set its own. `uniform` is short for
`specvlm:pruning=uniform`; `random` for the random relaxation baseline,
`lvspec:relevance=random:shift_window=0:filler_ratio=0` (any mismatch at a random share lam of
positions is accepted; `random:rho=0.3` adds the filler gate back). The label of a row is the
spec as written, so two variants of one method stay apart in the report. `hf`, `hf-compiled` and
`hf-assisted` are peer rows: transformers' own greedy `generate` on the same target, frames and
prompt: alone, alone with a static cache and the compiled forward, and with our draft as its
assistant at the command line's k (`bench/peers.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from specvid.config import DecodingConfig, parse
from specvid.errors import InvalidRequestError

# The row every other is compared with: the target alone.
BASELINE_LABEL = BASELINE_METHOD = "ar"

# Peer rows: other systems run on the same target and inputs (`bench/peers.py`).
PEERS = {"hf": BASELINE_METHOD, "hf-compiled": BASELINE_METHOD, "hf-assisted": "sd"}  # peer -> the engine method it stands beside

ALIASES = {
    "k": "num_draft_tokens",
    "conf": "draft_confidence",
    "drop": "drop_rate",
    "p": "attention_mass",
    "mass": "attention_mass",
    "positions": "draft_positions",
    "n": "top_n",
    "w": "shift_window",
    "topk": "shift_top_k",
    "rel": "relevance",
    "rho": "filler_ratio",
}
SHORTHANDS = {
    "uniform": {"method": "specvlm", "pruning": "uniform"},
    "random": {"method": "lvspec", "relevance": "random", "shift_window": 0, "filler_ratio": 0.0},
}


@dataclass(frozen=True)
class BenchMethod:
    label: str
    decoding: DecodingConfig
    peer: Optional[str] = None  # a peer system's row (`bench/peers.py`) instead of the engine's


def parse_methods(text: str, defaults: dict) -> list[BenchMethod]:
    """`text` as above -> one `BenchMethod` per entry, `defaults` under each entry's knobs."""
    methods = [parse_method(entry.strip(), defaults) for entry in text.split(",") if entry.strip()]
    if not methods:
        raise InvalidRequestError("--methods names no method")
    labels = [m.label for m in methods]
    if len(set(labels)) != len(labels):
        raise InvalidRequestError(f"--methods repeats a method: {labels}")
    return methods


def parse_method(entry: str, defaults: dict) -> BenchMethod:
    name, *knobs = entry.split(":")
    if name in PEERS:
        if knobs:
            raise InvalidRequestError(f"{name!r} is a peer row and takes no knobs, got {entry!r}")
        k = defaults.get("num_draft_tokens", DecodingConfig.model_fields["num_draft_tokens"].default)
        return BenchMethod(entry, DecodingConfig(method=PEERS[name], num_draft_tokens=k), peer=name)
    fields = dict(SHORTHANDS.get(name, {"method": name}))
    for knob in knobs:
        key, sep, value = knob.partition("=")
        if not sep or not key:
            raise InvalidRequestError(f"method {entry!r}: knob {knob!r} is not key=value")
        fields[ALIASES.get(key, key)] = _value(value)
    own = parse(DecodingConfig, fields)
    # Command-line defaults mean something only for methods with a draft (ar takes no knobs).
    return BenchMethod(entry, parse(DecodingConfig, {**defaults, **fields}) if own.uses_draft else own)


def _value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text
