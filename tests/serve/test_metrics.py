"""The router's metrics: what a finished request adds (Ray exports them to Prometheus; here each
counter's increments are read where they are made)."""

from __future__ import annotations

import pytest

from specvid.decoding.stats import SpecStats

pytest.importorskip("ray")


class Increments:
    """Stands between a metric and Ray's exporter, keeping what was added, by tags."""

    def __init__(self, metric):
        self.metric, self.added = metric, {}

    def inc(self, value, tags):
        key = tuple(sorted(tags.items()))
        self.added[key] = self.added.get(key, 0) + value
        self.metric.inc(value, tags)


def test_rounds_are_counted_by_the_draft_length_they_chose(ray_cluster):
    from deployments.metrics import RouterMetrics

    metrics = RouterMetrics()
    metrics.rounds = Increments(metrics.rounds)
    stats = SpecStats()
    for chosen, drafted, accepted in [(5, 5, 3), (5, 4, 4), (0, 0, 0), (2, 2, 1)]:
        stats.record_round(drafted, accepted, chosen=chosen)
    metrics.record("specvid", "sd", stats, 1.0, 0.1, "ok")
    by_length = {dict(key)["draft_length"]: value for key, value in metrics.rounds.added.items()}
    assert by_length == {"0": 1, "2": 1, "5": 2}
    assert stats.mean_draft_length == pytest.approx(12 / 4)
