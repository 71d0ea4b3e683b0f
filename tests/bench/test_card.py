"""The model-card evaluation on a random pair: every contract field, and the oracle holding."""

from __future__ import annotations

from specvid.bench.card import eval_seeds, evaluate_pair
from specvid.models.loader import load_model
from specvid.shapesworld.clips import make_clip

CONTRACT = (
    "clips", "target_fact_f1", "target_qa_acc", "draft_fact_f1", "draft_qa_acc", "agreement_anchor",
    "agreement_filler", "target_ms_per_token", "draft_ms_per_token", "cost_ratio",
)  # fmt: skip


def test_card_figures_of_a_random_pair():
    seeds = eval_seeds(2)
    card = evaluate_pair(load_model("random-qwen"), load_model("random-qwen-draft"), seeds, max_tokens=12)
    assert set(CONTRACT) <= set(card) and card["clips"] == 2
    assert card["sd_identical_to_ar"] == {"5": 1.0, "10": 1.0}  # speculative output == greedy output
    asked = {qa.kind for seed in seeds for qa in make_clip(seed).qa}
    by_kind = card["target_qa_acc_by_kind"]
    assert set(by_kind) == asked and all(0.0 <= acc <= 1.0 for acc in by_kind.values())
    questions = [(qa, make_clip(seed).spec.count) for seed in seeds for qa in make_clip(seed).qa]
    assert set(card["target_qa_acc_by_form"]) == {"choice" if qa.options else "open" for qa, _ in questions}
    assert set(card["target_qa_acc_by_shapes"]) == {str(count) for _, count in questions}
    # Every split is a partition of the same answers: its weighted mean is the overall accuracy.
    sizes = {}
    for qa, count in questions:
        sizes[str(count)] = sizes.get(str(count), 0) + 1
    weighted = sum(card["target_qa_acc_by_shapes"][k] * n for k, n in sizes.items()) / len(questions)
    assert abs(weighted - card["target_qa_acc"]) < 1e-9
    assert card["anchor_positions"] + card["filler_positions"] > 0
    assert card["cost_ratio"] == card["draft_ms_per_token"] / card["target_ms_per_token"]
    assert card["sd_cost_ratio"] == card["sd_draft_ms_per_token"] / card["target_ms_per_token"] > 0
