"""The benchmark's outputs: a terminal table, a JSON file, and a PNG plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

from specvid.bench.methods import BASELINE_LABEL

# (header, row key, format) of the terminal table, in order.
COLUMNS = (
    ("method", "method", "{}"),
    ("tau", "tau", "{:.2f}"),
    ("tok/round", "tokens_per_round", "{:.2f}"),
    ("decode tok/s", "decode_tokens_per_s", "{:.1f}"),
    ("decode x", "decode_speedup", "{:.2f}"),
    ("e2e ms", "e2e_ms", "{:.1f}"),
    ("e2e x", "e2e_speedup", "{:.2f}"),
    ("retention", "retention", "{:.3f}"),
    ("same as ar", "identical_to_ar", "{:.2f}"),
    ("video tok", "video_tokens", "{:.0f}"),
    ("draft video tok", "draft_video_tokens", "{:.0f}"),
    ("draft prefill ms", "draft_prefill_ms", "{:.2f}"),
    ("prune ms", "prune_ms", "{:.3f}"),
    ("draft KV MB", "draft_kv_mb", "{:.3f}"),
    ("loose/100", "loose_accepts_per_100", "{:.1f}"),
    ("rescued/100", "shift_rescues_per_100", "{:.1f}"),
)


def format_table(rows: Sequence[dict], columns: Sequence[tuple[str, str, str]] = COLUMNS) -> str:
    """A plain-text table, one line per row; '-' where a figure does not apply."""
    cells = [[header for header, _, _ in columns]]
    for row in rows:
        cells.append([_cell(row.get(key), fmt) for _, key, fmt in columns])
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = ["  ".join(_align(i, c, w) for i, (c, w) in enumerate(zip(line, widths))) for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _align(column: int, text: str, width: int) -> str:
    return text.rjust(width) if column else text.ljust(width)  # names left, figures right


def _cell(value, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def write_json(path: Path, rows: Sequence[dict], meta: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"meta": meta, "rows": list(rows)}, indent=2) + "\n")


def read_runs(paths: Sequence[Path]) -> tuple[dict, list[dict]]:
    """The meta of the first file and the rows of all, a method label kept once (the first seen).

    The files must describe one setting (pair, clips, frames, max tokens), else retention and
    tau would not be comparable; each row keeps the speedups of its own run against its own `ar`.
    """
    from specvid.errors import InvalidRequestError

    same = ("pair", "clips", "frames", "max_tokens")
    meta: Optional[dict] = None
    rows: dict[str, dict] = {}
    for path in paths:
        try:
            run = json.loads(path.read_text())
            run_meta, run_rows = run["meta"], run["rows"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise InvalidRequestError(f"{path}: not a `specvid bench --json` file ({e})") from None
        meta = meta or run_meta
        differs = [key for key in same if run_meta.get(key) != meta.get(key)]
        if differs:
            raise InvalidRequestError(
                f"{path}: {', '.join(differs)} differ from {paths[0]}'s; runs cannot mix")
        for row in run_rows:
            rows.setdefault(row["method"], row)
    return meta, list(rows.values())


def plot(path: Path, rows: Sequence[dict], title: Optional[str] = None) -> None:
    """Speedups and tau per method, and each method's histogram of accepted tokens per round."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on servers
    import matplotlib.pyplot as plt

    labels = [row["method"] for row in rows]
    x = range(len(rows))
    fig, (speed, tau, hist) = plt.subplots(1, 3, figsize=(15, 4.2))
    width = 0.4
    decode, e2e = [row["decode_speedup"] or 0 for row in rows], [row["e2e_speedup"] or 0 for row in rows]
    speed.bar([i - width / 2 for i in x], decode, width, label="decode")
    speed.bar([i + width / 2 for i in x], e2e, width, label="end to end")
    speed.axhline(1.0, color="grey", linewidth=0.8)
    speed.set(title="speedup over ar", xticks=list(x))
    speed.set_xticklabels(labels, rotation=30, ha="right")
    speed.legend()
    tau.bar(list(x), [row["tau"] for row in rows], color="tab:green")
    tau.set(title="tau (accepted draft tokens per round)", xticks=list(x))
    tau.set_xticklabels(labels, rotation=30, ha="right")
    for row in rows:
        counts = row.get("accepted_histogram") or []
        total = sum(counts)
        if total:
            hist.plot(range(len(counts)), [c / total for c in counts], marker="o", label=row["method"])
    hist.set(title="rounds by accepted draft tokens", xlabel="accepted", ylabel="share of rounds")
    if hist.lines:
        hist.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    _save(fig, path)


def plot_tradeoff(path: Path, rows: Sequence[dict], title: Optional[str] = None) -> None:
    """Retention against tau: one line per way of choosing loose positions (LVSpec's rankings
    and the random relaxation baseline), one point per row, with exact methods as markers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.8))
    series: dict[str, list[dict]] = {}
    for row in rows:
        if row.get("retention") is None or row["method"] == BASELINE_LABEL:
            continue
        if row.get("relevance") is None:
            ax.scatter(row["tau"], row["retention"], marker="s", color="black", zorder=3)
            ax.annotate(row["method"], (row["tau"], row["retention"]), fontsize=7, xytext=(4, -8),
                        textcoords="offset points")
        else:
            series.setdefault(_tradeoff_series(row), []).append(row)
    colours = plt.get_cmap("tab20").colors  # distinct colours for up to 20 series
    for i, (name, points) in enumerate(sorted(series.items())):
        points.sort(key=lambda r: r["tau"])
        ax.plot([r["tau"] for r in points], [r["retention"] for r in points], marker="o", label=name,
                color=colours[i % len(colours)])
    ax.set(xlabel="tau (accepted draft tokens per round)", ylabel="retention (fact F1 / ar)")
    ax.axhline(1.0, color="grey", linewidth=0.8)
    if series:
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    if title:
        ax.set_title(title)
    _save(fig, path)


def _tradeoff_series(row: dict) -> str:
    """Rows that differ only in lam share a line."""
    pruned = "+specvlm" if "specvlm" in row["method"] else ""
    gate = f", rho={row['filler_ratio']:g}" if row.get("filler_ratio") else ""
    if row["relevance"] == "random":
        return f"random relaxation{pruned}{gate}"
    size = f", N={row['top_n']}" if row["relevance"] == "embedding" else ""
    return f"{row['relevance']} relevance{pruned}{size}, w={row['shift_window']}{gate}"


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
