"""What one decode-time forward costs, three ways (`specvid bench-forwards`).

For each model of a pair, at the context a zoo caption prompt leaves after `generated` tokens:

- `transformers`: the model's own forward over a `DynamicCache`, called as the `hf` peer calls it
  (and as this engine did before it had its own decode forward), with the weights laid out as
  transformers loads them;
- `eager`: the project's decode forward (`models/decoder.py`) over a static cache slot, weights
  column-major as `load_model` stores them on CPU;
- `compiled`: the same forward after `torch.compile`.

Rows give the median ms of a decode step (1 token) and of a verify block (k + 1 tokens), and
for the draft the per-token ms of a whole proposal of k tokens: the step driven from Python k
times with the choice of each token (`transformers`), the draft loop run eagerly (`eager`) and
as one compiled graph (`compiled`, `TextDecoder.draft`). The summary gives c (draft step /
target step), c of a proposal's token, and verify / decode per way. The methods take turns
in each timed round, so drift in the machine's speed falls on all three alike.
"""

from __future__ import annotations

import statistics
import time
from contextlib import nullcontext
from typing import Callable

import torch

from specvid.bench.cost import Forwards, crop_to
from specvid.models.adapter import VideoLLM
from specvid.models.decoder import row_major_linears
from specvid.shapesworld.clips import make_clip
from specvid.shapesworld.world import split_seeds

WAYS = ("transformers", "eager", "compiled")


def forward_rows(target: VideoLLM, draft: VideoLLM, k: int, generated: int, rounds: int,
                 calls: int) -> tuple[list[dict], dict]:
    """Rows {model, forward, tokens, context, <way>_ms} for both models, and the summary."""
    rows = []
    for role, model in (("target", target), ("draft", draft)):
        context = _prompt_length(model) + generated
        for forward, n in (("decode", 1), ("verify", k + 1)):
            timers = _timers(model, context, n)
            layouts = {"transformers": lambda: row_major_linears(model.model), "eager": nullcontext,
                       "compiled": nullcontext}
            ms = _interleaved_ms(timers, layouts, rounds, calls)
            rows.append({"model": role, "name": model.name, "forward": forward, "tokens": n,
                         "context": context, **{f"{way}_ms": ms[way] for way in WAYS}})
    context = _prompt_length(draft) + generated
    layouts = {"transformers": lambda: row_major_linears(draft.model), "eager": nullcontext, "compiled": nullcontext}
    ms = _interleaved_ms(_proposal_timers(draft, context, k), layouts, rounds, calls)
    rows.append({"model": "draft", "name": draft.name, "forward": "proposal", "tokens": k, "context": context,
                 **{f"{way}_ms": ms[way] / k for way in WAYS}})  # per token
    return rows, summary(rows)


def summary(rows: list[dict]) -> dict:
    """Per way: c = draft decode / target decode, and verify / decode of each model."""
    ms = {(r["model"], r["forward"]): r for r in rows}
    out = {}
    for way in WAYS:
        key = f"{way}_ms"
        out[way] = {
            "c": ms["draft", "decode"][key] / ms["target", "decode"][key],
            "target_verify_over_decode": ms["target", "verify"][key] / ms["target", "decode"][key],
            "draft_verify_over_decode": ms["draft", "verify"][key] / ms["draft", "decode"][key],
            "target_decode_speedup": ms["target", "decode"]["transformers_ms"] / ms["target", "decode"][key],
            "draft_decode_speedup": ms["draft", "decode"]["transformers_ms"] / ms["draft", "decode"][key],
            "c_proposal": ms["draft", "proposal"][key] / ms["target", "decode"][key],
        }
    return out


def _prompt_length(model: VideoLLM) -> int:
    clip = make_clip(split_seeds("eval", 1)[0])
    return len(model.build_prompt(clip.frames, clip.caption_prompt))


def _timers(model: VideoLLM, context: int, n: int) -> dict[str, Callable[[], None]]:
    """One call per way: n new tokens after `context` cached ones, the cache restored after."""
    device = model.device
    with torch.inference_mode():  # as the engine calls it: the compiled graphs guard on this
        ids = torch.arange(3, 3 + n, device=device)
        positions = torch.arange(context, context + n, device=device)
        start = torch.tensor(context, device=device)
        slot = model.decoder.new_slot(context + n)
        # A step's cost does not depend on the cached values: random ones, as bench-cost uses.
        cache = Forwards(model.model, model.family, device, model.dtype, seed=0).synthetic_cache(context)
    hf_positions = positions.expand(3, 1, n) if model.family == "qwen2_5_vl" else positions[None]

    def transformers_call() -> None:
        model.model(input_ids=ids[None], position_ids=hf_positions, cache=cache, use_cache=True,
                    logits_to_keep=n)
        crop_to(cache, context)

    decoder = model.decoder
    return {
        "transformers": transformers_call,
        "eager": lambda: decoder.eager_forward(ids[None], positions[None], start[None], (slot,)),  # a batch of one
        "compiled": lambda: decoder(ids, positions, start, slot),
    }


def _proposal_timers(model: VideoLLM, context: int, k: int) -> dict[str, Callable[[], None]]:
    """One whole greedy proposal of k tokens after a 2-token block, per way."""
    device = model.device
    with torch.inference_mode():
        ids, positions = torch.arange(3, 5, device=device), torch.arange(context, context + 2, device=device)
        start = torch.tensor(context, device=device)
        slot = model.decoder.new_slot(context + k + 2)
        cache = Forwards(model.model, model.family, device, model.dtype, seed=0).synthetic_cache(context)
    axes = 3 if model.family == "qwen2_5_vl" else 1

    def transformers_steps() -> None:  # the step driven from Python, each token chosen and fed back
        token_ids, at = ids[None], positions
        for _ in range(k):
            hf_positions = at.expand(3, 1, -1) if axes == 3 else at[None]
            logits = model.model(input_ids=token_ids, position_ids=hf_positions, cache=cache, use_cache=True,
                                 logits_to_keep=1).logits[0, -1]
            token_ids, at = logits.argmax().view(1, 1), at[-1:] + 1
        crop_to(cache, context)

    decoder = model.decoder
    return {
        "transformers": transformers_steps,
        "eager": lambda: decoder.draft_steps(ids[None], positions[None], start[None], (slot,), k),
        "compiled": lambda: decoder.draft(ids, positions, start, slot, k),
    }


def _interleaved_ms(timers: dict[str, Callable[[], None]], layouts: dict[str, Callable], rounds: int,
                    calls: int) -> dict[str, float]:
    """Median ms per call of each timer; each round times `calls` calls of every way in turn,
    each inside its weight layout (set up untimed)."""
    samples: dict[str, list[float]] = {way: [] for way in timers}
    with torch.inference_mode():
        for round_ in range(rounds + 1):
            for way, call in timers.items():
                with layouts[way]():
                    times = [_seconds(call) for _ in range(calls)]
                if round_ > 0:  # round 0 warms up
                    samples[way].extend(times)
    return {way: 1e3 * statistics.median(times) for way, times in samples.items()}


def _seconds(call: Callable[[], None]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def format_forwards(rows: list[dict], totals: dict) -> str:
    from specvid.bench.cost_report import format_columns

    columns = [
        ("model", lambda r: f"{r['model']} ({r['name']})"),
        ("forward", lambda r: f"{r['forward']} {r['tokens']}"),
        ("context", lambda r: str(r["context"])),
        *[(f"{way} ms", (lambda w: lambda r: f"{r[f'{w}_ms']:.2f}")(way)) for way in WAYS],
        ("compiled x", lambda r: f"{r['transformers_ms'] / r['compiled_ms']:.2f}"),
    ]
    summary_columns = [
        ("way", lambda r: r["way"]),
        ("c", lambda r: f"{r['c']:.3f}"),
        ("target verify / decode", lambda r: f"{r['target_verify_over_decode']:.2f}"),
        ("draft verify / decode", lambda r: f"{r['draft_verify_over_decode']:.2f}"),
        ("c of a proposal's token", lambda r: f"{r['c_proposal']:.3f}"),
    ]
    summary_rows = [{"way": way, **figures} for way, figures in totals.items()]
    return format_columns(rows, columns) + "\n\n" + format_columns(summary_rows, summary_columns)
