"""The bench harness on a random pair: rows hold the contract, figures are what they claim."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from specvid.bench.cases import dataset_cases, zoo_cases
from specvid.bench.harness import MethodRuns, Run, run_methods, summarise
from specvid.bench.methods import BenchMethod, parse_methods
from specvid.config import DecodingConfig, SourceConfig, VideoSampling
from specvid.decoding.stats import SpecStats
from specvid.engine import LocalEngine
from specvid.errors import InvalidRequestError

CONTRACT = {
    "pair",
    "method",
    "clips",
    "tau",
    "tokens_per_round",
    "decode_tokens_per_s",
    "decode_speedup",
    "e2e_speedup",
    "retention",
    "identical_to_ar",
}


@pytest.fixture(scope="module")
def bench_rows(random_models, tmp_path_factory):
    target, draft = random_models["qwen"]
    directory = tmp_path_factory.mktemp("bench")
    cases = zoo_cases(2, num_frames=8, size=112, directory=directory)
    engine = LocalEngine(target, draft, sources=SourceConfig(local_root=str(directory)))
    methods = parse_methods(
        "sd,specvlm,uniform,lvspec:lam=0.9:w=2,lvspec:lam=0:w=0", {"num_draft_tokens": 3, "drop_rate": 0.9, "draft_length": "fixed"}
    )
    results = run_methods(engine, methods, cases, VideoSampling(num_frames=8, width=112, height=112), 12)
    return results, summarise(results, draft.kv_bytes_per_token)


def test_rows_cover_every_method_with_ar_first(bench_rows):
    results, rows = bench_rows
    assert [row["method"] for row in rows] == ["ar", "sd", "specvlm", "uniform", "lvspec:lam=0.9:w=2",
                                               "lvspec:lam=0:w=0"]  # fmt: skip
    assert all(len(r.runs) == 2 for r in results)
    assert all(CONTRACT - {"pair"} <= set(row) for row in rows)


def test_methods_take_turns_case_by_case(random_models, tmp_path):
    target, draft = random_models["qwen"]
    cases = zoo_cases(3, num_frames=8, size=112, directory=tmp_path)
    engine = LocalEngine(target, draft, sources=SourceConfig(local_root=str(tmp_path)))
    order: list[str] = []
    methods = parse_methods("sd,uniform", {"num_draft_tokens": 2, "drop_rate": 0.5})
    run_methods(engine, methods, cases, VideoSampling(num_frames=8, width=112, height=112), 3, order.append)
    assert order == ["ar", "sd", "uniform"] * 3  # so a drift in machine speed hits all alike


def test_exact_methods_reproduce_ar_and_prune_the_draft(bench_rows):
    results, rows = bench_rows
    by_method = {row["method"]: row for row in rows}
    for name in ("sd", "specvlm", "uniform"):
        assert by_method[name]["identical_to_ar"] == 1.0
    assert by_method["sd"]["draft_video_tokens"] == by_method["sd"]["video_tokens"] == 64
    assert by_method["specvlm"]["draft_video_tokens"] == by_method["uniform"]["draft_video_tokens"] == 6
    assert by_method["specvlm"]["draft_kv_mb"] < by_method["sd"]["draft_kv_mb"]
    assert by_method["ar"]["decode_speedup"] == by_method["ar"]["e2e_speedup"] == 1.0


def test_loose_rows_count_loose_accepts_per_100_tokens(bench_rows):
    results, rows = bench_rows
    by_method = {row["method"]: row for row in rows}
    exact, loose = by_method["lvspec:lam=0:w=0"], by_method["lvspec:lam=0.9:w=2"]
    assert exact["identical_to_ar"] == 1.0 and exact["loose_accepts_per_100"] == 0.0
    assert by_method["sd"]["loose_accepts_per_100"] is None
    runs = next(r for r in results if r.method.label == "lvspec:lam=0.9:w=2").runs
    emitted = sum(run.stats.emitted for run in runs)
    counted = sum(run.stats.loose_accepts for run in runs)
    assert loose["loose_accepts_per_100"] == pytest.approx(100 * counted / emitted)
    assert (loose["lam"], loose["shift_window"], loose["relevance"]) == (0.9, 2, "attention")


def test_tau_and_histogram_count_the_same_rounds(bench_rows):
    results, rows = bench_rows
    for entry, row in zip(results[1:], rows[1:]):
        rounds = sum(run.stats.rounds for run in entry.runs)
        accepted = sum(run.stats.accepted for run in entry.runs)
        histogram = row["accepted_histogram"]
        assert sum(histogram) == rounds
        assert sum(i * n for i, n in enumerate(histogram)) == accepted
        assert row["tau"] == pytest.approx(accepted / rounds)


def fake_run(tokens: list[int], decode_s: float, prefill_s: float, score: float) -> Run:
    stats = SpecStats(emitted=len(tokens), decode_s=decode_s, prefill_s=prefill_s, rounds=1)
    return Run(tokens, "", stats, video_s=0.0, score=score)


def test_speedups_are_medians_of_paired_ratios():
    ar = MethodRuns(BenchMethod("ar", DecodingConfig(method="ar")))
    sd = MethodRuns(BenchMethod("sd", DecodingConfig(method="sd")))
    # Per case: ar decodes 10 tokens/s; sd decodes 20, 40 and (an outlier) 1 token/s.
    ar.runs = [fake_run([1] * 11, 1.0, 0.5, 0.8) for _ in range(3)]
    sd.runs = [fake_run([1] * 11, t, 0.5, s) for t, s in ((0.5, 0.8), (0.25, 0.4), (10.0, 0.8))]
    sd.runs[1].token_ids = [2] * 11
    rows = summarise([ar, sd])
    assert rows[1]["decode_speedup"] == pytest.approx(2.0)  # median of 2, 4 and 0.1
    assert rows[1]["e2e_speedup"] == pytest.approx(1.5 / 1.0)  # median of 1.5, 2.0 and 0.14
    assert rows[1]["retention"] == pytest.approx((2 / 3 * 0.8 + 0.4 / 3) / 0.8)
    assert rows[1]["identical_to_ar"] == pytest.approx(2 / 3)


def test_dataset_rows_resolve_relative_paths_and_reject_bad_rows(tmp_path):
    (tmp_path / "rows.jsonl").write_text(
        '{"video": "a.mp4", "prompt": "What moves?"}\n\n{"video": "s3://b/k.mp4", "prompt": "Hi"}\n'
    )
    cases = dataset_cases(tmp_path / "rows.jsonl", limit=10)
    assert [c.video for c in cases] == [str(tmp_path / "a.mp4"), "s3://b/k.mp4"]
    assert all(c.score is None for c in cases)
    (tmp_path / "bad.jsonl").write_text('{"video": "a.mp4"}\n')
    with pytest.raises(InvalidRequestError, match="bad.jsonl:1"):
        dataset_cases(tmp_path / "bad.jsonl", limit=10)


def test_cli_writes_the_contract_json_and_a_png(tmp_path):
    out, png = tmp_path / "bench.json", tmp_path / "bench.png"
    command = [
        sys.executable,
        "-m",
        "specvid.cli",
        "bench",
        "--target",
        "random-llava",
        "--draft",
        "random-llava-draft",
        "--methods",
        "sd,specvlm:drop=0.5",
        "--clips",
        "2",
        "--max-tokens",
        "8",
        "--json",
        str(out),
        "--plot",
        str(png),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    rows = json.loads(out.read_text())["rows"]
    assert [row["method"] for row in rows] == ["ar", "sd", "specvlm:drop=0.5"]
    assert all(CONTRACT <= set(row) and row["clips"] == 2 for row in rows)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "specvlm:drop=0.5" in done.stdout  # the table


def test_bench_plot_merges_saved_runs_and_refuses_mixed_settings(bench_rows, tmp_path, capsys):
    from specvid.bench.report import write_json
    from specvid.cli import main

    _, rows = bench_rows
    meta = {"pair": "random", "clips": 2, "frames": 8, "max_tokens": 12}
    by_method = {row["method"]: row for row in rows}
    main_run, sweep = tmp_path / "main.json", tmp_path / "sweep.json"
    write_json(main_run, [by_method["ar"], by_method["sd"], by_method["lvspec:lam=0.9:w=2"]], meta)
    write_json(sweep, [by_method["ar"], by_method["lvspec:lam=0:w=0"]], meta)
    png = tmp_path / "tradeoff.png"
    assert main(["bench-plot", str(main_run), str(sweep), "--tradeoff-plot", str(png)]) == 0
    table = capsys.readouterr().out
    assert [line.split()[0] for line in table.splitlines()[2:]] == [
        "ar", "sd", "lvspec:lam=0.9:w=2", "lvspec:lam=0:w=0"]  # ar once, every run's methods
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    other = tmp_path / "other.json"
    write_json(other, [by_method["ar"]], {**meta, "clips": 30})
    assert main(["bench-plot", str(main_run), str(other)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "clips" in err


@pytest.mark.parametrize("family", ["qwen", "llava"])
def test_the_hf_peer_rows_are_transformers_generate_with_ar_s_tokens(random_models, tmp_path, family):
    target, draft = random_models[family]
    cases = zoo_cases(2, num_frames=8, size=112, directory=tmp_path)
    engine = LocalEngine(target, draft, sources=SourceConfig(local_root=str(tmp_path)))
    methods = parse_methods("hf,hf-compiled,hf-assisted", {"num_draft_tokens": 3})
    assert [m.peer for m in methods] == ["hf", "hf-compiled", "hf-assisted"]
    assert methods[2].decoding.num_draft_tokens == 3
    results = run_methods(engine, methods, cases, VideoSampling(num_frames=8, width=112, height=112), 12)
    rows = {row["method"]: row for row in summarise(results)}
    hf, compiled, assisted = rows["hf"], rows["hf-compiled"], rows["hf-assisted"]
    assert hf["identical_to_ar"] == 1.0  # the same greedy tokens, so the timings compare like for like
    # transformers' static cache + compiled forward: the same tokens, timed after an untimed warm-up
    assert compiled["identical_to_ar"] == 1.0 and compiled["decode_tokens_per_s"] > 0
    assert "unavailable" not in compiled
    assert assisted["identical_to_ar"] == 1.0  # assisted generation is lossless too
    assert hf["tau"] == 0.0 and hf["decode_tokens_per_s"] > 0 and hf["prefill_ms"] > 0
    assert 0.0 <= assisted["tau"] <= 3 and assisted["num_draft_tokens"] == 3
    assert assisted["draft_prefill_ms"] is None  # transformers does not report it
    assert [len(r.token_ids) for r in results[1].runs] == [len(r.token_ids) for r in results[0].runs]


def test_a_peer_transformers_refuses_is_a_row_that_says_why(random_models, tmp_path, monkeypatch):
    import specvid.bench.harness as harness
    from specvid.bench.peers import PeerUnavailableError

    def refused(*args, **kwargs):
        raise PeerUnavailableError("ValueError: static cache not supported for this model")

    monkeypatch.setattr(harness, "hf_generate", refused)  # what transformers does for such a family
    target, draft = random_models["qwen"]
    cases = zoo_cases(1, num_frames=8, size=112, directory=tmp_path)
    engine = LocalEngine(target, draft, sources=SourceConfig(local_root=str(tmp_path)))
    results = run_methods(engine, parse_methods("hf-compiled", {}), cases,
                          VideoSampling(num_frames=8, width=112, height=112), 8)
    rows = {row["method"]: row for row in summarise(results)}
    assert rows["hf-compiled"]["unavailable"].startswith("ValueError: static cache")
    assert rows["ar"]["identical_to_ar"] == 1.0 and len(results[0].runs) == 1  # the engine's rows still run


def test_a_peer_row_takes_no_knobs():
    with pytest.raises(InvalidRequestError, match="peer row"):
        parse_methods("hf:k=3", {})
