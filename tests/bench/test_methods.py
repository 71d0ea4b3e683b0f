"""`--methods` syntax: names, knobs after colons, aliases, defaults, and clear errors."""

from __future__ import annotations

import pytest

from specvid.bench.methods import parse_methods
from specvid.errors import InvalidRequestError

DEFAULTS = {"num_draft_tokens": 5, "drop_rate": 0.9}


def test_names_knobs_aliases_and_defaults():
    labels = ["ar", "sd", "specvlm:drop=0.5:p=0.4", "uniform", "specvlm:positions=compact:k=10"]
    by_label = {m.label: m.decoding for m in parse_methods(" , ".join(labels), DEFAULTS)}
    assert list(by_label) == labels
    assert by_label["sd"].num_draft_tokens == 5
    staged = by_label["specvlm:drop=0.5:p=0.4"]
    assert (staged.method, staged.drop_rate, staged.attention_mass) == ("specvlm", 0.5, 0.4)
    assert staged.pruning == "staged"
    uniform = by_label["uniform"]
    assert (uniform.method, uniform.pruning, uniform.drop_rate) == ("specvlm", "uniform", 0.9)
    compact = by_label["specvlm:positions=compact:k=10"]
    assert (compact.draft_positions, compact.num_draft_tokens) == ("compact", 10)


def test_lvspec_methods_knobs_and_the_random_baseline():
    defaults = {**DEFAULTS, "lam": 0.7, "top_n": 10, "shift_window": 2}
    text = "lvspec,lvspec+specvlm:lam=0.9:w=3,lvspec:rel=embedding:n=100,random:lam=0.5,random:rho=0.2"
    by_label = {m.label: m.decoding for m in parse_methods(text, defaults)}
    assert by_label["lvspec"].loose and not by_label["lvspec"].prunes_video
    both = by_label["lvspec+specvlm:lam=0.9:w=3"]
    assert both.loose and both.prunes_video and (both.lam, both.shift_window, both.drop_rate) == (0.9, 3, 0.9)
    embedding = by_label["lvspec:rel=embedding:n=100"]
    assert (embedding.relevance, embedding.top_n, embedding.lam) == ("embedding", 100, 0.7)
    baseline = by_label["random:lam=0.5"]
    assert (baseline.method, baseline.relevance) == ("lvspec", "random")
    assert (baseline.shift_window, baseline.lam, baseline.filler_ratio) == (0, 0.5, 0.0)
    assert by_label["lvspec"].filler_ratio == 0.3  # the gate is on by default, off in the baseline
    assert by_label["random:rho=0.2"].filler_ratio == 0.2


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("beam", "method"),
        ("specvlm:drop=1.5", "drop_rate"),
        ("specvlm:drop", "key=value"),
        ("specvlm:colour=red", "colour"),
        ("sd,sd", "repeats"),
        ("lvspec:lam=1.5", "lam"),
        ("lvspec:rel=oracle", "relevance"),
        (" , ", "no method"),
    ],
)
def test_bad_specs_are_clear_errors(text, fragment):
    with pytest.raises(InvalidRequestError, match=fragment):
        parse_methods(text, DEFAULTS)
