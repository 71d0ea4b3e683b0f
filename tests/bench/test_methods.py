"""`--methods` syntax: names, knobs after colons, aliases, defaults, and clear errors."""

from __future__ import annotations

import pytest

from specvid.bench.methods import parse_methods
from specvid.errors import InvalidRequestError

DEFAULTS = {"num_draft_tokens": 5, "drop_rate": 0.9}


def test_names_knobs_aliases_and_defaults():
    labels = ["ar", "sd", "specvlm:drop=0.5:p=0.4", "uniform", "specvlm:positions=compact:k=10"]
    by_label = {m.label: m.spec for m in parse_methods(" , ".join(labels), DEFAULTS)}
    assert list(by_label) == labels
    assert by_label["sd"].num_draft_tokens == 5
    staged = by_label["specvlm:drop=0.5:p=0.4"]
    assert (staged.method, staged.drop_rate, staged.attention_mass) == ("specvlm", 0.5, 0.4)
    assert staged.pruning == "staged"
    uniform = by_label["uniform"]
    assert (uniform.method, uniform.pruning, uniform.drop_rate) == ("specvlm", "uniform", 0.9)
    compact = by_label["specvlm:positions=compact:k=10"]
    assert (compact.draft_positions, compact.num_draft_tokens) == ("compact", 10)


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("beam", "method"),
        ("specvlm:drop=1.5", "drop_rate"),
        ("specvlm:drop", "key=value"),
        ("specvlm:colour=red", "colour"),
        ("sd,sd", "repeats"),
        (" , ", "no method"),
    ],
)
def test_bad_specs_are_clear_errors(text, fragment):
    with pytest.raises(InvalidRequestError, match=fragment):
        parse_methods(text, DEFAULTS)
