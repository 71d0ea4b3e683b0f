"""`specvid bench-serve`: what concurrent clients get from a deployment.

A closed loop per level: `concurrency` clients, each sending its next streamed request as soon
as its last one ends, until `requests` have been sent. Per level and method it reports the
aggregate throughput (emitted tokens / wall time), time to first token, p50 / p99 latency and
refusals (503). Against a running deployment (`--url`, REST with server-sent events) or an
in-process `LocalEngine` (same requests, same measurement, no Ray).

With `--compare`, every level runs again through an in-process `LocalEngine` (the deployment
idle meanwhile) and the two are printed side by side, with the draft length each chose. The
Serve overhead per round is `(served decode time - LocalEngine decode time) / rounds` of
the same request with the same tokens, one client at a time, median over requests; `LocalEngine`
runs its default (no draft-ahead rounds), whatever the served method asks for. Methods take the
knobs of `specvid bench --methods`: `sd,sd:draft_ahead=true` compares draft-ahead rounds with plain.
"""

from __future__ import annotations

import asyncio
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Optional, Protocol, Sequence

import requests

HTTP_TIMEOUT_S = 300


@dataclass
class Outcome:
    """One request as a client saw it."""

    status: int
    latency_s: float
    ttft_s: Optional[float] = None
    token_ids: list[int] = field(default_factory=list)
    stats: dict = field(default_factory=dict)  # the server's SpecStats, when it answered


class Client(Protocol):
    async def send(self, body: dict) -> Outcome: ...


class HttpClient:
    """Streams `POST /v1/generate` (native SSE); one thread per request in flight.

    The threads are its own, as many as `max_clients`: asyncio's default pool has only
    cpu_count + 4, which would cap every level at that many requests in flight.
    """

    def __init__(self, url: str, api_key: Optional[str] = None, max_clients: int = 64):
        self.url = url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.pool = ThreadPoolExecutor(max_workers=max_clients, thread_name_prefix="bench-serve")

    async def send(self, body: dict) -> Outcome:
        return await asyncio.get_running_loop().run_in_executor(self.pool, self._send, body)

    def _send(self, body: dict) -> Outcome:
        started = time.perf_counter()
        outcome = Outcome(status=0, latency_s=0.0)
        with requests.post(f"{self.url}/v1/generate", json={**body, "stream": True}, headers=self.headers,
                           stream=True, timeout=HTTP_TIMEOUT_S) as response:
            outcome.status = response.status_code
            if response.status_code == 200:
                for line in response.iter_lines(decode_unicode=True):
                    if not line or not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    event = json.loads(line[len("data: "):])
                    if "error" in event:
                        outcome.status = int(event["error"].get("status", 500))
                    if event.get("token_ids") and outcome.ttft_s is None:
                        outcome.ttft_s = time.perf_counter() - started
                    outcome.token_ids += event.get("token_ids", [])
                    outcome.stats = event.get("stats", outcome.stats)
        outcome.latency_s = time.perf_counter() - started
        return outcome


class EngineClient:
    """The same requests through a `LocalEngine` in this process."""

    def __init__(self, engine, videos: dict):
        self.engine = engine
        # uri -> a local file the engine fetches and decodes per request, as a deployment does,
        # or a DecodedVideo used as is
        self.videos = videos

    async def send(self, body: dict) -> Outcome:
        from specvid.decoding.stats import SpecStats

        started, stats = time.perf_counter(), SpecStats()
        outcome = Outcome(status=200, latency_s=0.0)
        video = self.videos.get(body["video"])
        if isinstance(video, str):
            body, video = {**body, "video": video}, None
        async for chunk in self.engine.astream(body, video=video, stats=stats):
            if chunk.token_ids and outcome.ttft_s is None:
                outcome.ttft_s = time.perf_counter() - started
            outcome.token_ids += chunk.token_ids
        outcome.latency_s = time.perf_counter() - started
        outcome.stats = stats.to_dict()
        return outcome


async def closed_loop(client: Client, bodies: Sequence[dict], concurrency: int,
                      max_seconds: float) -> tuple[list[Outcome], float]:
    """Send `bodies` with `concurrency` clients; stop sending after `max_seconds`.

    Returns the outcomes (in the order of `bodies`, cut where sending stopped) and the wall time.
    """
    outcomes: list[Optional[Outcome]] = [None] * len(bodies)
    next_index = 0
    started = time.perf_counter()

    async def one_client():
        nonlocal next_index
        while next_index < len(bodies) and time.perf_counter() - started < max_seconds:
            index, next_index = next_index, next_index + 1
            outcomes[index] = await client.send(bodies[index])

    await asyncio.gather(*(one_client() for _ in range(concurrency)))
    return [o for o in outcomes if o is not None], time.perf_counter() - started


def level_row(method: str, concurrency: int, outcomes: Sequence[Outcome], wall_s: float) -> dict:
    """One table row: a method at one concurrency."""
    served = [o for o in outcomes if o.status == 200]
    latencies = sorted(o.latency_s for o in served)
    ttfts = sorted(o.ttft_s for o in served if o.ttft_s is not None)
    tokens = sum(len(o.token_ids) for o in served)
    rounds = sum(o.stats.get("rounds", 0) for o in served)
    return {
        "method": method,
        "concurrency": concurrency,
        "requests": len(outcomes),
        "ok": len(served),
        "rejected": sum(o.status == 503 for o in outcomes),
        "failed": sum(o.status not in (200, 503) for o in outcomes),
        "tokens_per_s": tokens / wall_s if wall_s > 0 else 0.0,
        "ttft_p50_ms": 1e3 * _quantile(ttfts, 0.5),
        "latency_p50_ms": 1e3 * _quantile(latencies, 0.5),
        "latency_p99_ms": 1e3 * _quantile(latencies, 0.99),
        "tokens_per_round": tokens / rounds if rounds else 0.0,
        "mean_k": mean_draft_length(served),
        "wall_s": wall_s,
    }


def mean_draft_length(outcomes: Sequence[Outcome]) -> float:
    """The draft length the requests' rounds chose, on average over all their rounds."""
    counts = [o.stats.get("rounds_by_draft_length", []) for o in outcomes]
    rounds = sum(sum(c) for c in counts)
    return sum(k * n for c in counts for k, n in enumerate(c)) / rounds if rounds else 0.0


def side_by_side(served: Sequence[dict], local: Sequence[dict]) -> list[dict]:
    """Each method and concurrency served and in process: throughput, their ratio and the k chosen;
    `vs best local`: the served throughput against the better in-process method at that concurrency."""
    in_process = {(r["method"], r["concurrency"]): r for r in local}
    best = {}
    for r in local:
        best[r["concurrency"]] = max(best.get(r["concurrency"], 0.0), r["tokens_per_s"])
    rows = []
    for row in served:
        other = in_process.get((row["method"], row["concurrency"]))
        if other is None:
            continue
        rows.append({
            "method": row["method"],
            "concurrency": row["concurrency"],
            "served_tokens_per_s": row["tokens_per_s"],
            "local_tokens_per_s": other["tokens_per_s"],
            "served_vs_local": row["tokens_per_s"] / max(other["tokens_per_s"], 1e-9),
            "served_vs_best_local": row["tokens_per_s"] / max(best[row["concurrency"]], 1e-9),
            "served_k": row["mean_k"],
            "local_k": other["mean_k"],
        })
    return rows


SIDE_BY_SIDE_COLUMNS = (
    ("method", "method", "{}"),
    ("clients", "concurrency", "{}"),
    ("served tok/s", "served_tokens_per_s", "{:.1f}"),
    ("in-process tok/s", "local_tokens_per_s", "{:.1f}"),
    ("served / in-process", "served_vs_local", "{:.2f}"),
    ("vs best in-process", "served_vs_best_local", "{:.2f}"),
    ("k served", "served_k", "{:.2f}"),
    ("k in-process", "local_k", "{:.2f}"),
)


def with_scaling(rows: list[dict]) -> list[dict]:
    """Each row's throughput against its method's at concurrency 1 (`x one`)."""
    single = {r["method"]: r["tokens_per_s"] for r in rows if r["concurrency"] == 1}
    for row in rows:
        base = single.get(row["method"])
        row["throughput_x"] = row["tokens_per_s"] / base if base else None
    return rows


def round_overheads_ms(served: Sequence[Outcome], local: Sequence[Outcome]) -> list[float]:
    """Per request: the served decode time beyond the in-process one, per round (ms)."""
    overheads = []
    for s, loc in zip(served, local, strict=True):
        rounds = s.stats.get("rounds", 0)
        if s.status == 200 and rounds and s.token_ids == loc.token_ids:
            overheads.append(1e3 * (s.stats["decode_s"] - loc.stats["decode_s"]) / rounds)
    return overheads


def _median_decode_rate(outcomes: Sequence[Outcome]) -> float:
    """Median tokens per second of decoding over the requests that decoded."""
    rates = [len(o.token_ids) / o.stats["decode_s"] for o in outcomes if o.stats.get("decode_s")]
    return _quantile(sorted(rates), 0.5)


def _median_stat(outcomes: Sequence[Outcome], key: str) -> float:
    return _quantile(sorted(o.stats[key] for o in outcomes if key in o.stats), 0.5)


def _quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile of sorted `values`, linearly interpolated (0 for no values)."""
    if not values:
        return 0.0
    position = q * (len(values) - 1)
    low = int(position)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (position - low)


SERVE_COLUMNS = (
    ("method", "method", "{}"),
    ("clients", "concurrency", "{}"),
    ("requests", "requests", "{}"),
    ("503", "rejected", "{}"),
    ("failed", "failed", "{}"),
    ("tok/s", "tokens_per_s", "{:.1f}"),
    ("x one", "throughput_x", "{:.2f}"),
    ("TTFT p50 ms", "ttft_p50_ms", "{:.0f}"),
    ("p50 ms", "latency_p50_ms", "{:.0f}"),
    ("p99 ms", "latency_p99_ms", "{:.0f}"),
    ("tok/round", "tokens_per_round", "{:.2f}"),
    ("mean k", "mean_k", "{:.2f}"),
)


def format_serve_table(rows: Sequence[dict]) -> str:
    from specvid.bench.report import format_table

    return format_table(rows, SERVE_COLUMNS)


def plot_serving(path, rows: Sequence[dict], title: str) -> None:
    """Throughput and p50 / p99 latency against concurrency, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        levels = [r["concurrency"] for r in mine]
        left.plot(levels, [r["tokens_per_s"] for r in mine], marker="o", label=method)
        right.plot(levels, [r["latency_p50_ms"] for r in mine], marker="o", label=f"{method} p50")
        right.plot(levels, [r["latency_p99_ms"] for r in mine], marker="x", linestyle="--", label=f"{method} p99")
    left.set(xlabel="concurrent clients", ylabel="tokens / s (all clients)", title="throughput")
    right.set(xlabel="concurrent clients", ylabel="ms", title="request latency")
    for axis in (left, right):
        axis.set_xscale("log", base=2)
        axis.legend()
        axis.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---- the command ------------------------------------------------------------------------------


def sample_uris(bucket: str) -> list[str]:
    """The sample clips `make run` uploads (`ops/launch.py`) into s3://BUCKET/."""
    from specvid.shapesworld.sample import sample_names

    return [f"s3://{bucket}/{name}.mp4" for name in sample_names()]


def request_bodies(method: str, videos: Sequence[str], prompt: str, count: int, max_tokens: int) -> list[dict]:
    """`count` requests of one method over the videos in turn; each decodes exactly max_tokens.

    `method` is an entry of `--methods`, knobs included (`sd:draft_ahead=true`, `sd:k=3`)."""
    from specvid.bench.methods import parse_method

    decoding = parse_method(method, {}).decoding.model_dump(exclude_unset=True)
    return [
        {
            "video": videos[i % len(videos)],
            "prompt": prompt,
            "sampling": {"max_tokens": max_tokens, "ignore_eos": True},
            "decoding": dict(decoding),
        }
        for i in range(count)
    ]


def engine_default(body: dict) -> dict:
    """A request as `LocalEngine` runs it by default: no draft-ahead rounds."""
    decoding = {k: v for k, v in body["decoding"].items() if k != "draft_ahead"}
    return {**body, "decoding": decoding}


def run_levels(client: Client, methods: Sequence[str], levels: Sequence[int], videos: Sequence[str],
               prompt: str, max_tokens: int, requests_per_client: int, max_seconds: float,
               progress=print) -> tuple[list[dict], dict[str, list[Outcome]]]:
    """Every method at every concurrency; rows, and each method's outcomes one client at a time."""
    rows, alone = [], {}
    for method in methods:
        # One request first: compiled graphs and caches warm, outside the figures.
        asyncio.run(client.send(request_bodies(method, videos, prompt, 1, max_tokens)[0]))
        for level in levels:
            bodies = request_bodies(method, videos, prompt, max(len(videos), requests_per_client * level), max_tokens)
            outcomes, wall_s = asyncio.run(closed_loop(client, bodies, level, max_seconds))
            rows.append(level_row(method, level, outcomes, wall_s))
            progress(format_serve_table(rows[-1:]).splitlines()[-1])
            if level == 1:
                alone[method] = outcomes
    return with_scaling(rows), alone


def overhead_rows(served: dict[str, list[Outcome]], local_client: Client, videos: Sequence[str], prompt: str,
                  max_tokens: int) -> list[dict]:
    """The Serve overhead per round: the one-client requests again, through `LocalEngine` as it
    runs by default (so a draft-ahead served row compares with plain in-process rounds); and how
    idle each served worker was."""
    rows = []
    for method, outcomes in served.items():
        bodies = [engine_default(b) for b in request_bodies(method, videos, prompt, len(outcomes), max_tokens)]
        asyncio.run(local_client.send(bodies[0]))  # warm, as the served run was
        local, _ = asyncio.run(closed_loop(local_client, bodies, 1, float("inf")))
        overheads = sorted(round_overheads_ms(outcomes, local))
        rows.append({
            "method": method,
            "requests": len(overheads),
            "overhead_ms_per_round_p50": _quantile(overheads, 0.5),
            "served_decode_tokens_per_s": _median_decode_rate(outcomes),
            "local_decode_tokens_per_s": _median_decode_rate(local),
            "identical": sum(s.token_ids == loc.token_ids for s, loc in zip(outcomes, local)) / len(local),
            **{key: _median_stat(outcomes, key) for key in ("draft_idle_share", "target_idle_share", "ahead_hit_rate")},
        })
    for row in rows:
        row["served_vs_local"] = row["served_decode_tokens_per_s"] / max(row["local_decode_tokens_per_s"], 1e-9)
    return rows


OVERHEAD_COLUMNS = (
    ("method", "method", "{}"),
    ("requests", "requests", "{}"),
    ("served decode tok/s", "served_decode_tokens_per_s", "{:.1f}"),
    ("LocalEngine decode tok/s", "local_decode_tokens_per_s", "{:.1f}"),
    ("served / local", "served_vs_local", "{:.2f}"),
    ("overhead ms/round p50", "overhead_ms_per_round_p50", "{:.2f}"),
    ("draft idle", "draft_idle_share", "{:.2f}"),
    ("target idle", "target_idle_share", "{:.2f}"),
    ("ahead used", "ahead_hit_rate", "{:.2f}"),
    ("same tokens", "identical", "{:.2f}"),
)
