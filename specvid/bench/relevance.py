"""`specvid bench-relevance`: how well each LVSpec ranking finds the zoo's visual anchors.

The zoo knows which words are anchors (`zoo/anchors.py`; each is one token of the zoo's
tokenizer). Along the target's own greedy captions of held-out clips, the draft's greedy guess
is taken at every position (teacher-forced, as in a verify block), so each position has the
pair the rule sees: the target's token and the draft's. A position is an anchor position when
either token is an anchor word. Each ranking scores each position as the rule does (embedding:
the larger of the two tokens' relevance); then

- AUROC: the chance a random anchor outscores a random filler (0.5 is no better than chance),
  over all positions and over the mismatches alone (d != t: the only positions the rule's
  choice changes anything at);
- precision / recall at lam: cut the caption into blocks of k positions, mark the most relevant
  ceil((1 - lam) k) of each block as anchors (the rule's `anchor_mask`): the share of marked
  positions that are anchors, and the share of anchors marked;
- strict recall: the share of anchors the full rule keeps strict (ranking, always-strict
  classes, and word pieces together), i.e. the anchors a loose accept can never replace.

The first token of a caption is left out: the attention ranking reads the query before a
position, which for the first token is inside the prefill.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import torch

from specvid.bench.card import clip_video, draft_guesses
from specvid.decoding.accept import anchor_mask
from specvid.decoding.relevance import TokenRelevance, vocabulary_mean
from specvid.decoding.strict import TokenClasses, strict_positions
from specvid.engine import LocalEngine
from specvid.models.adapter import VideoLLM
from specvid.request_path import sampled_fps
from specvid.shapesworld.anchors import anchor_words
from specvid.shapesworld.clips import make_clip
from specvid.shapesworld.world import split_seeds


@dataclass
class Caption:
    """One caption's positions after the first: the target's and the draft's tokens, whether
    either is an anchor, and each ranking's scores."""

    tokens: list[int]
    drafts: list[int]
    anchors: list[bool]
    scores: dict[str, torch.Tensor] = field(default_factory=dict)  # ranking -> [n]


def ranking_names(top_ns: Sequence[int]) -> list[str]:
    return [f"embedding N={n}" for n in top_ns] + ["attention", "random"]


def score_captions(
    target: VideoLLM,
    draft: VideoLLM,
    seeds: Iterable[int],
    top_ns: Sequence[int],
    max_tokens: int = 80,
    progress: Callable[[], None] = lambda: None,
) -> list[Caption]:
    """The target's greedy caption of each clip, scored by every ranking."""
    engine = LocalEngine(target)
    anchor_ids = zoo_anchor_ids(target)
    table = target.model.get_input_embeddings().weight
    token_mean = vocabulary_mean(table)
    generator = torch.Generator().manual_seed(0)
    captions = []
    for seed in seeds:
        clip = make_clip(seed)
        video = clip_video(clip)
        request = {"video": "in-memory", "prompt": clip.caption_prompt, "decoding": {"method": "ar"},
                   "sampling": {"max_tokens": max_tokens}}  # fmt: skip
        tokens = engine.generate(request, video).token_ids
        if len(tokens) < 2:
            continue
        guesses = draft_guesses(draft, video, clip.caption_prompt, tokens)[1:]
        is_anchor = [t in anchor_ids or d in anchor_ids for t, d in zip(tokens[1:], guesses)]
        caption = Caption(tokens[1:], guesses, is_anchor)
        prompt = target.build_prompt(video.frames, clip.caption_prompt, sampled_fps(video))
        embeddings = target.video_embeddings(prompt)
        ids, draft_ids = torch.tensor(caption.tokens), torch.tensor(guesses)
        for n in top_ns:
            relevance = TokenRelevance(table, token_mean, embeddings, n)
            caption.scores[f"embedding N={n}"] = torch.maximum(relevance(ids), relevance(draft_ids))
        state, _ = target.prefill(prompt, video_embeddings=embeddings)  # the tower ran once above
        _, mass = target.extend_with_video_mass(state, tokens[:-1], prompt.video_index)
        caption.scores["attention"] = mass
        caption.scores["random"] = torch.rand(len(caption.tokens), generator=generator)
        captions.append(caption)
        progress()
    return captions


def zoo_anchor_ids(model: VideoLLM) -> frozenset[int]:
    """Ids whose text, stripped of its leading space, is a zoo anchor word."""
    texts = model.tokenizer.batch_decode([[i] for i in range(len(model.tokenizer))])
    return frozenset(i for i, text in enumerate(texts) if text.strip() in anchor_words() or _is_number(text))


def _is_number(text: str) -> bool:
    return text.strip().isdigit()


def separation(captions: Sequence[Caption], ranking: str, classes: TokenClasses, lam: float, k: int) -> dict:
    """AUROC, precision and recall at lam, and strict recall of one ranking (module docstring)."""
    hits = marked = anchors = anchors_strict = 0
    anchor_scores, filler_scores, mismatch_anchor, mismatch_filler = [], [], [], []
    for caption in captions:
        scores, truth = caption.scores[ranking], caption.anchors
        anchor_scores += [float(s) for s, a in zip(scores, truth) if a]
        filler_scores += [float(s) for s, a in zip(scores, truth) if not a]
        differs = [t != d for t, d in zip(caption.tokens, caption.drafts)]
        mismatch_anchor += [float(s) for s, a, x in zip(scores, truth, differs) if a and x]
        mismatch_filler += [float(s) for s, a, x in zip(scores, truth, differs) if x and not a]
        for start in range(0, len(caption.tokens), k):
            block = slice(start, start + k)
            tokens, is_anchor = caption.tokens[block], truth[block]
            mask = anchor_mask(scores[block], lam)
            context = caption.tokens[max(0, start - 8) : start]
            strict = strict_positions(classes, caption.drafts[block], tokens, mask, context)
            marked += int(mask.sum())
            hits += sum(bool(m) and a for m, a in zip(mask, is_anchor))
            anchors += sum(is_anchor)
            anchors_strict += sum(bool(s) and a for s, a in zip(strict, is_anchor))
    return {
        "ranking": ranking,
        "auroc": auroc(anchor_scores, filler_scores),
        "auroc_mismatch": auroc(mismatch_anchor, mismatch_filler),
        "mismatches": len(mismatch_anchor) + len(mismatch_filler),
        "precision": hits / marked if marked else None,
        "recall": hits / anchors if anchors else None,
        "strict_recall": anchors_strict / anchors if anchors else None,
        "anchors": anchors,
        "positions": sum(len(c.tokens) for c in captions),
    }


def auroc(positives: Sequence[float], negatives: Sequence[float]) -> float | None:
    """P(a random positive scores above a random negative), ties counting half."""
    if not positives or not negatives:
        return None
    pos, neg = torch.tensor(positives), torch.tensor(negatives)
    above = (pos[:, None] > neg[None, :]).float().sum() + 0.5 * (pos[:, None] == neg[None, :]).float().sum()
    return float(above / (len(positives) * len(negatives)))


def relevance_rows(
    target: VideoLLM,
    draft: VideoLLM,
    clips: int,
    top_ns: Sequence[int],
    lams: Sequence[float],
    k: int,
    progress: Callable[[], None] = lambda: None,
) -> list[dict]:
    """One row per ranking and lam over `clips` held-out clips."""
    captions = score_captions(target, draft, split_seeds("eval", clips), top_ns, progress=progress)
    special = target.special_token_ids | target.eos_token_ids
    classes = TokenClasses.from_tokenizer(target.tokenizer, target.vocab_size, special)
    rows = []
    for ranking in ranking_names(top_ns):
        for lam in lams:
            rows.append({**separation(captions, ranking, classes, lam, k), "lam": lam, "k": k})
    return rows


def format_relevance(rows: Sequence[dict]) -> str:
    """The terminal table of `relevance_rows`, with the counts it rests on."""
    first = rows[0]
    lines = [
        f"{first['positions']} positions, {first['anchors']} anchors, {first['mismatches']} mismatches",
        "",
        f"{'ranking':<16} {'lam':>4} {'AUROC':>6} {'AUROC mismatch':>14} {'precision':>9} {'recall':>6} "
        f"{'strict recall':>13}",
    ]
    lines.append("-" * len(lines[-1]))
    for r in rows:
        lines.append(
            f"{r['ranking']:<16} {r['lam']:>4.1f} {r['auroc']:>6.3f} {r['auroc_mismatch']:>14.3f} "
            f"{r['precision']:>9.3f} {r['recall']:>6.3f} {r['strict_recall']:>13.3f}"
        )
    return "\n".join(lines)
