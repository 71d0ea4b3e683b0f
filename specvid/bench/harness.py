"""Run decoding methods over the same videos and prompts, and reduce the runs to report rows.

Every run takes the path a user's request takes: the video file is read and decoded by PyAV,
the target prefills (and scores the video tokens), the draft prefills (pruned or not), and the
rounds run through `LocalEngine`. Each method is warmed up on the first case before its timed
runs, and all methods run in one process, one after another, so their ratios compare like
with like.

Definitions (per method, over all cases):
- tau: accepted draft tokens per round, bonus excluded; tokens per round = tau + 1.
- decode tokens/s of a run: tokens emitted after the first, over decode time (after prefill);
  reported as the median over cases.
- decode speedup: the median over cases of the run's decode tokens/s over `ar`'s on that case.
- end-to-end time of a run: video read + decode, prefill of target and draft, pruning, and
  decoding; e2e speedup: the median over cases of `ar`'s time over the method's.
Paired, per-case ratios with medians keep one slow outlier run from swinging a figure.
- retention: mean fact score (caption F1) over `ar`'s, where the cases can be scored.
- identical to ar: share of cases whose tokens equal `ar`'s.
- loose accepts / shift rescues per 100 tokens (LVSpec): over all runs, per 100 emitted tokens.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

from specvid.bench.methods import BASELINE_LABEL, BenchMethod
from specvid.bench.peers import PeerUnavailableError, hf_generate
from specvid.config import DecodingConfig, VideoSampling
from specvid.decoding.stats import SpecStats
from specvid.engine import LocalEngine
from specvid.request_path import GenerationResult


@dataclass(frozen=True)
class BenchCase:
    """One video and prompt; `score(text)` rates an answer, when the case can be scored."""

    name: str
    video: str  # a URI the engine can load
    prompt: str
    score: Optional[Callable[[str], float]] = None


@dataclass
class Run:
    token_ids: list[int]
    text: str
    stats: SpecStats
    video_s: float
    score: Optional[float]

    @property
    def e2e_s(self) -> float:
        return self.video_s + self.stats.prefill_s + self.stats.decode_s


@dataclass
class MethodRuns:
    method: BenchMethod
    runs: list[Run] = field(default_factory=list)
    unavailable: Optional[str] = None  # why a peer's row could not run here (transformers refused it)


BASELINE = BenchMethod(BASELINE_LABEL, DecodingConfig(method=BASELINE_LABEL))


def run_methods(
    engine: LocalEngine,
    methods: Sequence[BenchMethod],
    cases: Sequence[BenchCase],
    sampling: VideoSampling,
    max_tokens: int,
    progress: Callable[[str], None] = lambda label: None,
) -> list[MethodRuns]:
    """Every method over every case; `ar` (added if missing) is the baseline and comes first.

    The methods take turns case by case rather than one after another, so a slow drift in the
    machine's speed (seen on shared 2-core boxes: `ar` at 215 and 323 tokens/s in two runs
    minutes apart) falls on every method alike and cancels in the paired speedups.
    """
    if not cases:
        raise ValueError("the benchmark needs at least one case")
    ordered = [BASELINE] + [m for m in methods if m.label != BASELINE.label]
    results = [MethodRuns(method) for method in ordered]
    for entry in results:
        try:
            _run_one(engine, entry.method, cases[0], sampling, max_tokens)  # warm-up, not recorded
        except PeerUnavailableError as refused:
            entry.unavailable = str(refused)
    for case in cases:
        for entry in results:
            if entry.unavailable is None:
                entry.runs.append(_run_one(engine, entry.method, case, sampling, max_tokens))
            progress(entry.method.label)
    return results


def _run_one(engine, method: BenchMethod, case: BenchCase, sampling: VideoSampling, max_tokens: int) -> Run:
    started = time.perf_counter()
    video = engine.load_video(case.video, sampling)
    video_s = time.perf_counter() - started
    if method.peer is not None:
        assistant = engine.draft if method.decoding.uses_draft else None
        token_ids, stats = hf_generate(engine.target, video, case.prompt, max_tokens, assistant,
                                       method.decoding.num_draft_tokens, compiled=method.peer == "hf-compiled")
        text = engine.target.decode(token_ids)
    else:
        request = {
            "video": case.video,
            "prompt": case.prompt,
            "decoding": method.decoding.model_dump(),
            "sampling": {"max_tokens": max_tokens},
            "video_sampling": sampling.model_dump(),
        }
        result: GenerationResult = engine.generate(request, video)
        token_ids, text, stats = result.token_ids, result.text, result.stats
    score = case.score(text) if case.score is not None else None
    return Run(token_ids, text, stats, video_s, score)


def summarise(results: Sequence[MethodRuns], kv_bytes_per_token: Optional[int] = None) -> list[dict]:
    """One report row per method (see the module docstring for each figure)."""
    baseline = next(r for r in results if r.method.label == BASELINE.label)
    base_score = _mean_score(baseline.runs)
    rows = []
    for entry in results:
        if entry.unavailable is not None:
            rows.append({"method": entry.method.label, "clips": 0, "unavailable": entry.unavailable})
            continue
        runs, config = entry.runs, entry.method.decoding
        rounds = sum(run.stats.rounds for run in runs)
        accepted = sum(run.stats.accepted for run in runs)
        drafts = config.uses_draft
        tau = accepted / rounds if rounds and drafts else 0.0
        score = _mean_score(runs)
        row = {
            "method": entry.method.label,
            "clips": len(runs),
            "tau": tau,
            "tokens_per_round": tau + 1.0,
            "decode_tokens_per_s": _median([_decode_rate(run) for run in runs]),
            "decode_speedup": _median(_paired(runs, baseline.runs, _decode_speedup)),
            "e2e_ms": 1e3 * statistics.median(run.e2e_s for run in runs),
            "e2e_speedup": _median(_paired(runs, baseline.runs, lambda r, b: b.e2e_s / r.e2e_s)),
            "retention": score / base_score if score is not None and base_score else None,
            "score": score,
            "identical_to_ar": _identical_share(runs, baseline.runs),
            "tokens": sum(len(run.token_ids) for run in runs),
            "video_ms": 1e3 * statistics.median(run.video_s for run in runs),
            "prefill_ms": 1e3 * statistics.median(run.stats.prefill_s for run in runs),
            "video_tokens": statistics.mean(run.stats.video_tokens for run in runs),
            "num_draft_tokens": config.num_draft_tokens if drafts else None,
            "accepted_histogram": _histogram(runs) if drafts and entry.method.peer is None else [],
        }
        own_draft = drafts and entry.method.peer is None  # a peer's draft figures are not known
        row.update(_draft_figures(runs, kv_bytes_per_token) if own_draft else _no_draft())
        row.update(_loose_figures(runs, config))
        rows.append(row)
    return rows


def _draft_figures(runs: list[Run], kv_bytes_per_token: Optional[int]) -> dict:
    context = statistics.median(run.stats.draft_context_tokens for run in runs)
    return {
        "draft_video_tokens": statistics.mean(run.stats.draft_video_tokens for run in runs),
        "draft_prefill_ms": 1e3 * statistics.median(run.stats.draft_prefill_s for run in runs),
        "prune_ms": 1e3 * statistics.median(run.stats.prune_s for run in runs),
        "draft_kv_mb": context * kv_bytes_per_token / 2**20 if kv_bytes_per_token else None,
    }


def _loose_figures(runs: list[Run], config: DecodingConfig) -> dict:
    """LVSpec's counters per 100 emitted tokens, and the knobs that produced them."""
    if not config.loose:
        return {"loose_accepts_per_100": None, "shift_rescues_per_100": None}
    emitted = sum(run.stats.emitted for run in runs)
    per_100 = lambda count: 100.0 * count / emitted if emitted else 0.0  # noqa: E731
    return {
        "loose_accepts_per_100": per_100(sum(run.stats.loose_accepts for run in runs)),
        "shift_rescues_per_100": per_100(sum(run.stats.shift_rescues for run in runs)),
        "lam": config.lam,
        "top_n": config.top_n,
        "shift_window": config.shift_window,
        "shift_top_k": config.shift_top_k,
        "filler_ratio": config.filler_ratio,
        "relevance": config.relevance,
    }


def _no_draft() -> dict:
    return {"draft_video_tokens": None, "draft_prefill_ms": None, "prune_ms": None, "draft_kv_mb": None}


def _identical_share(runs: list[Run], baseline: list[Run]) -> float:
    return sum(r.token_ids == b.token_ids for r, b in zip(runs, baseline, strict=True)) / len(runs)


def _decode_rate(run: Run) -> Optional[float]:
    """Tokens per second after the first; None for a run that decoded nothing."""
    tokens = run.stats.emitted - 1
    return tokens / run.stats.decode_s if tokens > 0 and run.stats.decode_s > 0 else None


def _decode_speedup(run: Run, base: Run) -> Optional[float]:
    return _ratio(_decode_rate(run), _decode_rate(base))


def _paired(runs: list[Run], baseline: list[Run], figure) -> list[Optional[float]]:
    return [figure(r, b) for r, b in zip(runs, baseline, strict=True)]


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return a / b if a is not None and b else None


def _median(values: list[Optional[float]]) -> Optional[float]:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _mean_score(runs: list[Run]) -> Optional[float]:
    scores = [run.score for run in runs if run.score is not None]
    return statistics.mean(scores) if scores else None


def _histogram(runs: list[Run]) -> list[int]:
    """Rounds by number of accepted draft tokens: entry i counts rounds that accepted i."""
    width = max((len(run.stats.rounds_by_accepted) for run in runs), default=0)
    counts = [0] * width
    for run in runs:
        for i, n in enumerate(run.stats.rounds_by_accepted):
            counts[i] += n
    return counts
