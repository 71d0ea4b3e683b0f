"""Prometheus metrics of the router, through Ray Serve's metrics API.

Speculative decoding counters carry vLLM's names, so dashboards built for vLLM read them:
drafts (rounds with at least one draft token), draft tokens, accepted tokens, and accepted
tokens per draft position (label `position`). Acceptance rate = accepted / draft tokens;
mean accepted length = accepted / drafts. Ray exports them with a `ray_` prefix.
"""

from __future__ import annotations

from ray.serve.metrics import Counter, Gauge, Histogram

from specvid.decoding.stats import SpecStats

LATENCY_BOUNDARIES = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0]
RATIO_BOUNDARIES = [0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0]
BATCH_BOUNDARIES = [1, 2, 4, 8, 16, 32, 64]


class RouterMetrics:
    def __init__(self):
        tags = ("model", "method")
        self.num_drafts = Counter(
            "spec_decode_num_drafts", description="Verify rounds that carried draft tokens.", tag_keys=tags
        )
        self.num_draft_tokens = Counter(
            "spec_decode_num_draft_tokens", description="Draft tokens proposed.", tag_keys=tags
        )
        self.num_accepted_tokens = Counter(
            "spec_decode_num_accepted_tokens", description="Draft tokens accepted.", tag_keys=tags
        )
        self.num_accepted_tokens_per_pos = Counter(
            "spec_decode_num_accepted_tokens_per_pos",
            description="Draft tokens accepted, by position in the draft.",
            tag_keys=(*tags, "position"),
        )
        self.rounds = Counter(
            "specvid_decode_rounds",
            description="Decode rounds by the draft length they chose (label draft_length; 0: plain decoding).",
            tag_keys=(*tags, "draft_length"),
        )
        self.requests = Counter(
            "specvid_requests", description="Finished requests by outcome.", tag_keys=(*tags, "outcome")
        )
        self.latency = Histogram(
            "specvid_request_latency_s",
            description="End-to-end request latency (video, prefill, decode).",
            boundaries=LATENCY_BOUNDARIES,
            tag_keys=tags,
        )
        self.ttft = Histogram(
            "specvid_time_to_first_token_s",
            description="Time from request arrival to the first emitted token.",
            boundaries=LATENCY_BOUNDARIES,
            tag_keys=tags,
        )
        self.pruned_ratio = Histogram(
            "specvid_pruned_token_ratio",
            description="Share of video tokens removed from the draft's context.",
            boundaries=RATIO_BOUNDARIES,
            tag_keys=tags,
        )

        self.active = Gauge("specvid_requests_active", description="Requests decoding now.", tag_keys=("model",))
        self.queued = Gauge(
            "specvid_requests_queued", description="Requests waiting for a place to decode.", tag_keys=("model",)
        )
        self.rejected = Counter(
            "specvid_requests_rejected",
            description="Requests refused by admission control (503 with Retry-After).",
            tag_keys=("model",),
        )

    def admission(self, model: str, active: int, queued: int) -> None:
        self.active.set(active, {"model": model})
        self.queued.set(queued, {"model": model})

    def record(
        self, model: str, method: str, stats: SpecStats, latency_s: float, ttft_s: float | None, outcome: str
    ) -> None:
        tags = {"model": model, "method": method}
        self.requests.inc(1, {**tags, "outcome": outcome})
        if outcome != "ok":
            return
        drafts = stats.drafted_per_position[0] if stats.drafted_per_position else 0  # rounds with drafts
        if drafts:
            self.num_drafts.inc(drafts, tags)
            self.num_draft_tokens.inc(stats.drafted, tags)
        if stats.accepted:
            self.num_accepted_tokens.inc(stats.accepted, tags)
        for k, rounds in enumerate(stats.rounds_by_draft_length):
            if rounds:
                self.rounds.inc(rounds, {**tags, "draft_length": str(k)})
        for position, accepted in enumerate(stats.accepted_per_position):
            if accepted:
                self.num_accepted_tokens_per_pos.inc(accepted, {**tags, "position": str(position)})
        self.latency.observe(latency_s, tags)
        if ttft_s is not None:
            self.ttft.observe(ttft_s, tags)
        self.pruned_ratio.observe(stats.pruned_ratio, tags)


class BatchMetrics:
    """What a worker replica's batcher does: how many requests share each forward."""

    def __init__(self, worker: str):
        self.tags = {"worker": worker}
        self.size = Histogram(
            "specvid_batch_size",
            description="Requests in one batched draft or verify call.",
            boundaries=BATCH_BOUNDARIES,
            tag_keys=("worker",),
        )
        self.waiting = Gauge(
            "specvid_batch_queue_depth", description="Calls waiting for the next batch.", tag_keys=("worker",)
        )

    def __call__(self, size: int, waiting: int) -> None:
        self.size.observe(size, self.tags)
        self.waiting.set(waiting, self.tags)
