"""`specvid bench-cost`: real-size configs, a depth-truncated run on the CPU, the too-big error.

CPU only; no test asserts a wall-clock value, only that figures exist, are finite and positive.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from specvid.bench.cost import CostConfig, Timing, device_busy_seconds, run_cost
from specvid.bench.cost_report import ideal_speedup
from specvid.bench.real_models import (
    REGISTRY,
    build_skeleton,
    check_fits,
    estimate_memory,
    full_depth_parameters,
    resolve_pair,
)
from specvid.cli import main
from specvid.errors import InvalidRequestError, TooLargeError

# From each checkpoint's config.json: hidden, intermediate, layers, heads, KV heads, vocab.
PUBLISHED = {
    "qwen2.5-vl-7b": (3584, 18944, 28, 28, 4, 152064),
    "qwen2.5-vl-32b": (5120, 27648, 64, 40, 8, 152064),
    "qwen2.5-vl-72b": (8192, 29568, 80, 64, 8, 152064),
    "llava-ov-7b": (3584, 18944, 28, 28, 4, 152128),
    "llava-ov-72b": (8192, 29568, 80, 64, 8, 152128),
}


@pytest.mark.parametrize("key", sorted(PUBLISHED))
def test_registry_carries_the_published_numbers(key):
    t = REGISTRY[key].text
    assert (t.hidden, t.intermediate, t.layers, t.heads, t.kv_heads, t.vocab) == PUBLISHED[key]


@pytest.mark.parametrize("key", sorted(PUBLISHED))
def test_a_one_layer_build_scaled_to_full_depth_has_the_nominal_size(key):
    spec = REGISTRY[key]
    model = build_skeleton(spec, 1)  # meta parameters: no memory, no init time
    language = model.model.language_model
    assert len(language.layers) == 1
    assert language.config.hidden_size == spec.text.hidden  # real width, only depth truncated
    assert abs(full_depth_parameters(model, spec.text.layers) / spec.nominal_params - 1) < 0.05
    # The arithmetic behind the memory check counts exactly what the build materialises.
    built = sum(p.numel() for p in language.layers.parameters())
    head = sum(p.numel() for p in language.norm.parameters()) + model.lm_head.weight.numel()
    assert (built, head) == (spec.text.layer_params, spec.text.head_params)


def test_video_tokens_follow_the_family_layouts():
    qwen, llava = REGISTRY["qwen2.5-vl-7b"], REGISTRY["llava-ov-7b"]
    assert qwen.video_tokens(64) == 32 * 16 * 16  # pairs of 448-px frames, 2x2 merge
    assert qwen.video_tokens(3) == qwen.video_tokens(4)  # an odd frame count repeats the last frame
    assert llava.video_tokens(64) == 64 * 14 * 14 + 1  # 196 per frame, one newline


def test_pairs_and_overrides_resolve_to_registry_models():
    assert resolve_pair("qwen", None, None) == ("qwen2.5-vl-32b", "qwen2.5-vl-7b")
    assert resolve_pair("llava", None, None) == ("llava-ov-72b", "llava-ov-7b")
    assert resolve_pair("qwen", "qwen2.5-vl-72b", None) == ("qwen2.5-vl-72b", "qwen2.5-vl-7b")
    with pytest.raises(InvalidRequestError, match="unknown model"):
        resolve_pair("qwen", "gpt-5", None)


def test_ideal_speedup_is_the_docs_formula():
    assert ideal_speedup(tau=3.0, k=5, c=0.2) == pytest.approx(4 / 2)  # (1 + tau) / (k c + 1)
    assert ideal_speedup(tau=3.0, k=5, c=0.2, verify_steps=1.5) == pytest.approx(4 / 2.5)


def test_only_the_per_layer_part_of_a_time_is_scaled():
    assert Timing(0.3, fixed_seconds=0.1).full_depth(layers=2, full_layers=10) == pytest.approx(0.1 + 0.2 * 5)
    assert Timing(0.3).full_depth(layers=10, full_layers=10) == 0.3


def test_a_one_layer_run_gives_positive_finite_figures_and_json(tmp_path, capsys):
    path = tmp_path / "cost.json"
    models = ["--target", "qwen2.5-vl-7b", "--draft", "qwen2.5-vl-7b"]
    quick = ["--device", "cpu", "--layers", "1", "--frames", "2", "--repeats", "1", "--warmup", "0"]
    code = main(["bench-cost", *models, *quick, "--json", str(path)])
    assert code == 0
    assert "decode step" in capsys.readouterr().out
    report = json.loads(path.read_text())
    meta, rows = report["meta"], report["rows"]
    assert (meta["device_type"], meta["dtype"], meta["torch"]) == ("cpu", "float32", torch.__version__)
    assert meta["clock"] == "wall"
    assert (meta["target"]["layers"], meta["target"]["full_layers"]) == (1, 28)
    assert (meta["video_tokens"], meta["kept_video_tokens"]) == (256, 26)  # drop 0.9
    costs = {(r["quantity"], r["model"]): r for r in rows if r["kind"] == "cost"}
    for quantity in ("decode step", "verify block, k=5", "verify block, k=10", "prefill, full video",
                     "prefill, pruned video", "decode step, pruned context"):
        assert any(q == quantity for q, _ in costs), quantity
    for row in costs.values():
        assert math.isfinite(row["value"]) and row["value"] > 0, row
        assert math.isfinite(row["full_depth"]) and row["full_depth"] > 0, row
        assert row["scaled"] is True
        if row["unit"] == "ms":  # the part the scaling leaves alone is reported beside it
            assert math.isfinite(row["depth_independent_ms"]) and row["depth_independent_ms"] > 0, row
    # KV per token: measured from the 1-layer cache, exact at 28 layers (2 x 4 heads x 128 x 4 bytes).
    kv = costs[("KV per token", "target")]
    assert (kv["value"], kv["full_depth"]) == (4.0, 4.0 * 28)
    speedups = [r for r in rows if r["kind"] == "speedup"]
    assert {r["k"] for r in speedups} == {5, 10} and all(r["tau"] <= r["k"] for r in speedups)
    assert all(math.isfinite(r["ideal_full_depth"]) and r["ideal_full_depth"] > 0 for r in speedups)


def test_a_model_too_big_fails_early_naming_bytes_and_a_depth_that_fits():
    spec = REGISTRY["qwen2.5-vl-32b"]
    limit = 20 * 2**30
    with pytest.raises(TooLargeError) as error:
        check_fits(spec, 64, torch.bfloat16, context=8256, block=11, available=limit, where="test")
    message = error.value.message
    assert "\n" not in message and "GiB" in message and "Qwen2.5-VL-32B" in message
    fits = int(message.split("--layers ")[1].split()[0])
    need = [estimate_memory(spec, layers, 2, 8256, 11).total for layers in (fits, fits + 1)]
    assert need[0] <= limit < need[1]


def test_the_cli_reports_a_too_big_model_in_one_line(capsys):
    code = main(["bench-cost", "--pair", "llava", "--device", "cpu",
                 "--layers", "80", "--memory-limit", "16"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "413" in err and "--layers" in err and "LLaVA-OneVision-72B" in err


def test_nothing_fits_in_a_tiny_memory_limit():
    cfg = CostConfig(target="qwen2.5-vl-7b", draft="qwen2.5-vl-7b", layers=1, frames=1, memory_limit=1024)
    with pytest.raises(TooLargeError, match="not fit even with one layer"):
        run_cost(cfg)


def test_gpu_busy_time_sums_the_device_events_of_a_trace():
    from types import SimpleNamespace

    device, cpu = torch.autograd.DeviceType.CUDA, torch.autograd.DeviceType.CPU
    events = [SimpleNamespace(device_type=device, self_device_time_total=1500.0),  # kernel, us
              SimpleNamespace(device_type=cpu, self_device_time_total=9000.0),  # a launch call: host side
              SimpleNamespace(device_type=device, self_device_time_total=500.0)]  # memcpy
    assert device_busy_seconds(events) == pytest.approx(0.002)


def test_the_gpu_busy_clock_is_refused_without_a_gpu(capsys):
    code = main(["bench-cost", "--target", "qwen2.5-vl-7b", "--draft", "qwen2.5-vl-7b", "--device", "cpu",
                 "--layers", "1", "--frames", "1", "--clock", "gpu-busy"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "gpu-busy" in err and "cuda" in err
