"""`specvid bench-serve`'s load generator and arithmetic, in process (the served run is in
tests/serve/test_serve_load.py)."""

from __future__ import annotations

import asyncio

import pytest

from specvid.bench import serving
from specvid.bench.serving import (
    Outcome,
    closed_loop,
    level_row,
    round_overheads_ms,
    with_scaling,
)
from specvid.engine import LocalEngine
from tests.helpers import random_video


def test_quantiles_interpolate_between_sorted_values():
    assert serving._quantile([], 0.5) == 0.0
    assert serving._quantile([4.0], 0.99) == 4.0
    assert serving._quantile([1.0, 2.0, 3.0, 5.0], 0.5) == 2.5
    assert serving._quantile([float(i) for i in range(101)], 0.99) == pytest.approx(99.0)


def test_a_level_row_counts_tokens_of_answered_requests_only():
    outcomes = [
        Outcome(200, 1.0, 0.1, [1] * 10, {"rounds": 5}),
        Outcome(200, 3.0, 0.3, [1] * 10, {"rounds": 5}),
        Outcome(503, 0.01),
        Outcome(500, 0.02),
    ]
    row = level_row("sd", 4, outcomes, wall_s=4.0)
    assert (row["requests"], row["ok"], row["rejected"], row["failed"]) == (4, 2, 1, 1)
    assert row["tokens_per_s"] == 5.0 and row["tokens_per_round"] == 2.0
    assert row["latency_p50_ms"] == pytest.approx(2000.0) and row["ttft_p50_ms"] == pytest.approx(200.0)
    rows = with_scaling([level_row("sd", 1, outcomes[:1], 2.0), row])
    assert rows[0]["throughput_x"] == 1.0 and rows[1]["throughput_x"] == 1.0


def test_the_overhead_per_round_compares_the_same_tokens_only():
    served = [Outcome(200, 1, None, [1, 2], {"rounds": 2, "decode_s": 0.05}),
              Outcome(200, 1, None, [1, 3], {"rounds": 2, "decode_s": 0.05})]
    local = [Outcome(200, 1, None, [1, 2], {"decode_s": 0.01}), Outcome(200, 1, None, [9, 9], {"decode_s": 0.01})]
    assert round_overheads_ms(served, local) == [pytest.approx(20.0)]


def test_clients_in_a_closed_loop_share_one_engine_and_each_answer_is_its_own(random_models):
    target, draft = random_models["qwen"]
    engine = LocalEngine(target, draft)
    videos = {f"clip-{i}": random_video(seed=i, num_frames=4) for i in range(3)}
    client = serving.EngineClient(engine, videos)
    bodies = serving.request_bodies("sd", list(videos), "What moves?", count=6, max_tokens=8)
    outcomes, wall_s = asyncio.run(closed_loop(client, bodies, concurrency=3, max_seconds=120))
    alone = [engine.generate(body, videos[body["video"]]).token_ids for body in bodies]
    assert [o.token_ids for o in outcomes] == alone
    assert all(o.status == 200 and len(o.token_ids) == 8 and o.ttft_s <= o.latency_s for o in outcomes)
    assert wall_s > 0
    # The time bound stops sending: nothing after the first request once it has passed.
    few, _ = asyncio.run(closed_loop(client, bodies, concurrency=1, max_seconds=0.0))
    assert few == []


def test_the_http_client_keeps_as_many_requests_in_flight_as_there_are_clients():
    """A real SSE server on 127.0.0.1 that holds every request until all 12 overlap (or 10 s pass).

    Holding until the last one arrives, rather than for a fixed time, keeps the check independent
    of how fast the machine starts the clients' threads; a client capped below 12 still fails it.
    """
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    clients = 12
    overlap, state = threading.Condition(), {"now": 0, "most": 0}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (the stdlib's name)
            self.rfile.read(int(self.headers["Content-Length"]))
            with overlap:
                state["now"] += 1
                state["most"] = max(state["most"], state["now"])
                overlap.notify_all()
                overlap.wait_for(lambda: state["most"] >= clients, timeout=10)
                state["now"] -= 1
            events = [{"token_ids": [1, 2]}, {"finish_reason": "length", "stats": {"rounds": 1}}]
            body = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        client = serving.HttpClient(f"http://127.0.0.1:{server.server_port}", max_clients=clients)
        bodies = serving.request_bodies("ar", ["v"], "p", count=clients, max_tokens=2)
        outcomes, _ = asyncio.run(closed_loop(client, bodies, concurrency=clients, max_seconds=30))
    finally:
        server.shutdown()
        server.server_close()
    assert state["most"] == clients
    assert len(outcomes) == clients
    assert all(o.status == 200 and o.token_ids == [1, 2] and o.stats == {"rounds": 1} for o in outcomes)


def test_side_by_side_pairs_levels_and_compares_with_the_better_in_process_method():
    def row(method, clients, tokens_per_s, k):
        return {"method": method, "concurrency": clients, "tokens_per_s": tokens_per_s, "mean_k": k}

    served = [row("ar", 8, 150.0, 0.0), row("sd", 8, 180.0, 0.5), row("sd", 1, 120.0, 4.0)]
    local = [row("ar", 8, 300.0, 0.0), row("sd", 8, 270.0, 0.2)]  # no in-process sd at 1: no pair
    rows = serving.side_by_side(served, local)
    assert [(r["method"], r["concurrency"]) for r in rows] == [("ar", 8), ("sd", 8)]
    assert rows[1]["served_vs_local"] == pytest.approx(180 / 270)
    assert rows[1]["served_vs_best_local"] == pytest.approx(180 / 300)
    assert (rows[1]["served_k"], rows[1]["local_k"]) == (0.5, 0.2)


def test_the_mean_draft_length_weighs_every_round():
    outcomes = [Outcome(200, 1, None, [1], {"rounds_by_draft_length": [2, 0, 0, 0, 2]}),
                Outcome(200, 1, None, [1], {"rounds_by_draft_length": [0, 0, 0, 0, 0, 4]})]
    assert serving.mean_draft_length(outcomes) == pytest.approx((2 * 4 + 4 * 5) / 8)
    assert serving.mean_draft_length([Outcome(200, 1)]) == 0.0
