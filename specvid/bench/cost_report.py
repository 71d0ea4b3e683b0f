"""The rows and the terminal table of `specvid bench-cost`: per-quantity figures, KV sizes,
cost ratio c, and the ideal speedup formula at a few tau."""


from __future__ import annotations

import os
import platform
from typing import TYPE_CHECKING, Optional, Sequence

import torch

from specvid.bench.real_models import (
    DTYPES,
    MemoryEstimate,
    build_skeleton,
    full_depth_parameters,
)

if TYPE_CHECKING:
    from specvid.bench.cost_types import Context, CostConfig, Measured


# ---- rows ---------------------------------------------------------------------------------------


def ideal_speedup(tau: float, k: int, c: float, verify_steps: float = 1.0) -> float:
    """Decode speedup of one round over plain decoding (docs/bench.md): (1 + τ) / (k c + v).

    A round emits τ + 1 tokens for k draft steps (each c target steps) and one verify forward
    (v target steps; v = 1 in the ideal formula, the measured verify / decode ratio otherwise).
    """
    return (1.0 + tau) / (k * c + verify_steps)


def _row(quantity: str, m: Measured, role: str, tokens: Optional[int], context: Optional[int],
         value: float, full_depth: float, unit: str, timing: Optional[str] = None) -> dict:
    """A cost row; `timing` names the timed forward behind a time row (its depth-independent part
    is reported too, so the scaling can be checked)."""
    return {
        "kind": "cost",
        "quantity": quantity,
        "model": role,
        "name": m.spec.title,
        "layers": m.layers,
        "full_layers": m.spec.text.layers,
        "tokens": tokens,
        "context": context,
        "value": value,
        "full_depth": full_depth,
        "scaled": m.truncated,
        "unit": unit,
        "depth_independent_ms": m.fixed_ms(timing) if timing else None,
    }


def cost_rows(target: Measured, draft: Measured, ctx: Context, cfg: CostConfig) -> list[dict]:
    """One row per figure: value at the built depth and at full depth (scaled when truncated)."""
    rows = []
    step = target.ms("decode")
    rows.append(_row("decode step", target, "target", 1, ctx.full, *step, "ms", "decode"))
    for k in cfg.draft_tokens:
        verify = target.ms(f"verify k={k}")
        rows.append(_row(f"verify block, k={k}", target, "target", k + 1, ctx.full, *verify, "ms",
                         f"verify k={k}"))
        rows.append(_row(f"verify / decode step, k={k}", target, "target", k + 1, ctx.full,
                         *_ratios(verify, step), "x"))
    for label, length in (("full", ctx.full), ("pruned", ctx.pruned)):
        step_ms = draft.ms(f"decode {label}")
        rows.append(_row(f"decode step, {label} context", draft, "draft", 1, length, *step_ms, "ms",
                         f"decode {label}"))
    for label, length in (("full", ctx.full), ("pruned", ctx.pruned)):
        prefill_ms = draft.ms(f"prefill {label}")
        rows.append(_row(f"prefill, {label} video", draft, "draft", length, 0, *prefill_ms, "ms",
                         f"prefill {label}"))
    rows.append(_row("prefill full / pruned", draft, "draft", None, None,
                     *_ratios(draft.ms("prefill full"), draft.ms("prefill pruned")), "x"))
    for label, length in (("full", ctx.full), ("pruned", ctx.pruned)):
        c = _ratios(draft.ms(f"decode {label}"), step)
        rows.append(_row(f"c = draft step / target step, {label} context", draft, "pair", 1, length, *c, "x"))
    rows += _kv_rows(target, draft, ctx, cfg)
    return rows


def _kv_rows(target: Measured, draft: Measured, ctx: Context, cfg: CostConfig) -> list[dict]:
    """KV bytes per token and whole caches: measured at the built depth, exact at full depth."""
    itemsize = DTYPES[cfg.dtype].itemsize
    rows = []
    for role, m in (("target", target), ("draft", draft)):
        measured = m.kv[ctx.full] / ctx.full
        exact = m.spec.text.kv_bytes_per_token(m.spec.text.layers, itemsize)
        rows.append(_row("KV per token", m, role, None, None, measured / 2**10, exact / 2**10, "KiB"))
    caches = [("target", target, ctx.full, "full"), ("draft", draft, ctx.full, "full"),
              ("draft", draft, ctx.pruned, "pruned")]
    for role, m, length, label in caches:
        exact = length * m.spec.text.kv_bytes_per_token(m.spec.text.layers, itemsize)
        measured = m.kv.get(length, 0)
        mib = (measured / 2**20, exact / 2**20)
        rows.append(_row(f"KV cache, {label} context", m, role, None, length, *mib, "MiB"))
    return rows


def _ratios(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
    return a[0] / b[0], a[1] / b[1]


def speedup_rows(target: Measured, draft: Measured, cfg: CostConfig) -> list[dict]:
    """The ideal-speedup formula at each k and τ <= k, for a full-context and a pruned-context draft."""
    step = target.ms("decode")
    rows = []
    for k in cfg.draft_tokens:
        verify = _ratios(target.ms(f"verify k={k}"), step)
        for tau in (t for t in cfg.taus if t <= k):
            for label in ("full", "pruned"):
                c = _ratios(draft.ms(f"decode {label}"), step)
                rows.append({
                    "kind": "speedup",
                    "k": k,
                    "tau": tau,
                    "draft_context": label,
                    "c": c[0],
                    "c_full_depth": c[1],
                    "verify_steps": verify[0],
                    "verify_steps_full_depth": verify[1],
                    "ideal": ideal_speedup(tau, k, c[0]),
                    "ideal_full_depth": ideal_speedup(tau, k, c[1]),
                    "with_verify": ideal_speedup(tau, k, c[0], verify[0]),
                    "with_verify_full_depth": ideal_speedup(tau, k, c[1], verify[1]),
                })
    return rows


def _meta(cfg: CostConfig, device: torch.device, ctx: Context, target: Measured, draft: Measured,
          estimates: dict[str, MemoryEstimate]) -> dict:
    import transformers

    def model_meta(m: Measured, role: str) -> dict:
        skeleton = build_skeleton(m.spec, 1)
        return {
            "key": m.spec.key,
            "title": m.spec.title,
            "config_from": m.spec.hf_id,
            "layers": m.layers,
            "full_layers": m.spec.text.layers,
            "parameters_full_depth": full_depth_parameters(skeleton, m.spec.text.layers),
            "nominal_parameters": m.spec.nominal_params,
            "estimated_bytes": estimates[role].total,
        }

    return {
        "device": device_name(device),
        "device_type": device.type,
        "dtype": cfg.dtype,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
        "frames": cfg.frames,
        "video_tokens": ctx.video,
        "kept_video_tokens": ctx.kept,
        "drop_rate": cfg.drop_rate,
        "prompt_tokens": ctx.prompt,
        "context_full": ctx.full,
        "context_pruned": ctx.pruned,
        "repeats": cfg.repeats,
        "warmup": cfg.warmup,
        "clock": cfg.clock,
        "target": model_meta(target, "target"),
        "draft": model_meta(draft, "draft"),
        "weights": "random N(0, 0.02); vision tower and token embeddings not materialised (inputs_embeds)",
    }


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        if names:
            return f"{names[0]} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return platform.processor() or "cpu"


# ---- terminal output ----------------------------------------------------------------------------

CLOCKS = {
    "wall": "wall clock (kernel-launch gaps included)",
    "gpu-busy": "GPU busy time (summed kernel time: launch gaps excluded)",
}

COST_COLUMNS = (
    ("quantity", lambda r: r["quantity"]),
    ("model", lambda r: r["model"]),
    ("layers", lambda r: f"{r['layers']}/{r['full_layers']}"),
    ("tokens", lambda r: _int(r["tokens"])),
    ("context", lambda r: _int(r["context"])),
    ("built depth", lambda r: _figure(r["value"])),
    ("full depth", lambda r: _figure(r["full_depth"]) + ("*" if r["scaled"] and r["unit"] == "ms" else "")),
    ("unit", lambda r: r["unit"]),
)

SPEEDUP_COLUMNS = (
    ("k", lambda r: str(r["k"])),
    ("tau", lambda r: f"{r['tau']:.2f}"),
    ("draft context", lambda r: r["draft_context"]),
    ("c", lambda r: f"{r['c_full_depth']:.3f}"),
    ("ideal x", lambda r: f"{r['ideal_full_depth']:.2f}"),
    ("verify steps", lambda r: f"{r['verify_steps_full_depth']:.2f}"),
    ("x with measured verify", lambda r: f"{r['with_verify_full_depth']:.2f}"),
)


def format_columns(rows: Sequence[dict], columns) -> str:
    """A plain-text table: first column left-aligned, figures right-aligned (as `specvid bench`)."""
    cells = [[header for header, _ in columns]] + [[cell(r) for _, cell in columns] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
             for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_report(report: dict) -> str:
    """The header, the cost table and the speedup table of a `run_cost` result."""
    meta, rows = report["meta"], report["rows"]
    t, d = meta["target"], meta["draft"]
    scaled = t["layers"] < t["full_layers"] or d["layers"] < d["full_layers"]
    header = [
        f"{t['title']} target / {d['title']} draft on {meta['device']}, {meta['dtype']}, random weights",
        f"built depth: target {t['layers']} of {t['full_layers']} layers, draft {d['layers']} of "
        f"{d['full_layers']}; {meta['frames']} frames = {meta['video_tokens']} video tokens "
        f"(draft keeps {meta['kept_video_tokens']}) + {meta['prompt_tokens']} prompt tokens; "
        f"median of {meta['repeats']} runs, {CLOCKS[meta.get('clock', 'wall')]}",
    ]
    if scaled:
        header.append("* scaled: depth-independent part + per-layer part x full / built layers")
    speedups = [r for r in rows if r["kind"] == "speedup"]
    return "\n".join([
        *header,
        "",
        format_columns([r for r in rows if r["kind"] == "cost"], COST_COLUMNS),
        "",
        "Ideal decode speedup (1 + tau) / (k c + v) from the full-depth figures; v = 1 ('ideal x') "
        "or the measured verify / decode ratio:",
        format_columns(speedups, SPEEDUP_COLUMNS),
    ])


def _int(value: Optional[int]) -> str:
    return "-" if value is None else str(value)


def _figure(value: float) -> str:
    if value >= 100:
        return f"{value:.0f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"
