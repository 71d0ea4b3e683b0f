"""`specvid bench-forwards`: rows per model and forward, and the summary's ratios."""

from __future__ import annotations

import pytest

from specvid.bench.forwards import WAYS, format_forwards, forward_rows


def test_rows_time_every_way_and_the_summary_divides_them(random_models):
    target, draft = random_models["llava"]
    rows, totals = forward_rows(target, draft, k=3, generated=10, rounds=1, calls=2)
    assert [(r["model"], r["forward"], r["tokens"]) for r in rows] == [
        ("target", "decode", 1), ("target", "verify", 4), ("draft", "decode", 1), ("draft", "verify", 4),
        ("draft", "proposal", 3)]  # per token of a whole proposal
    assert all(r[f"{way}_ms"] > 0 for r in rows for way in WAYS)
    ms = {(r["model"], r["forward"]): r for r in rows}
    for way in WAYS:
        key = f"{way}_ms"
        assert totals[way]["c"] == pytest.approx(ms["draft", "decode"][key] / ms["target", "decode"][key])
        verify_ratio = ms["target", "verify"][key] / ms["target", "decode"][key]
        assert totals[way]["target_verify_over_decode"] == pytest.approx(verify_ratio)
        assert totals[way]["c_proposal"] == pytest.approx(ms["draft", "proposal"][key] / ms["target", "decode"][key])
    table = format_forwards(rows, totals)
    assert "compiled ms" in table and "target verify / decode" in table and "c of a proposal's token" in table
