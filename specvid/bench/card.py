"""Model-card figures of a target/draft pair on held-out ShapesWorld clips.

Every clip goes through the same path a user's video does (mp4 bytes -> PyAV -> frames), and
every answer through `LocalEngine`. Reported per pair:

- quality: fact F1 of captions and QA accuracy, target alone and draft alone (greedy), and the
  target's QA accuracy per kind of question (colour, shape, motion, count, ...), per form (open
  or multiple choice) and per number of shapes in the clip;
- agreement: along the target's own captions, how often the draft's greedy next token equals
  the target's, split by whether the target's token is a visual anchor or a filler;
- cost: median decode milliseconds per token of each model alone, and their ratio c; and what a
  draft token costs inside `sd` at k = 5 (the draft's forward time per drafted token, whole
  proposals included) over a target token, `sd_cost_ratio`;
- the oracle: `sd` output equals `ar` output on every clip, and tau at each draft length.
"""

from __future__ import annotations

import statistics
from typing import Callable, Iterable, Optional

import torch

from specvid.config import VideoLimits, VideoSampling
from specvid.engine import LocalEngine
from specvid.models.adapter import VideoLLM
from specvid.request_path import GenerationResult, sampled_fps
from specvid.shapesworld.anchors import token_anchor_mask
from specvid.shapesworld.clips import Clip, encode_clip_mp4, make_clip
from specvid.shapesworld.scorer import aggregate, score_answer, score_caption
from specvid.shapesworld.world import split_seeds
from specvid.video import DecodedVideo, decode_video


def clip_video(clip: Clip) -> DecodedVideo:
    """A clip as a user's video arrives: mp4 bytes decoded by PyAV."""
    frames, size = clip.frames.shape[0], clip.frames.shape[2]
    sampling = VideoSampling(num_frames=frames, width=size, height=size)
    return decode_video(encode_clip_mp4(clip), sampling, VideoLimits())


# The longest reference answer, reasoned or not, is 15 tokens; room for a wordier model.
ANSWER_TOKENS = 24


def ask(engine: LocalEngine, video: DecodedVideo, prompt: str, method: str, k: int, max_tokens: int):
    """One question about an already decoded clip, through the engine as a served request."""
    request = {
        "video": "in-memory",
        "prompt": prompt,
        "decoding": {"method": method, "num_draft_tokens": k},
        "sampling": {"max_tokens": max_tokens},
    }
    return engine.generate(request, video)


def draft_guesses(draft: VideoLLM, video: DecodedVideo, prompt: str, tokens: list[int]) -> list[int]:
    """The draft's greedy token at each position of `tokens` (teacher-forced on them)."""
    prompt_d = draft.build_prompt(video.frames, prompt, sampled_fps(video))
    state, first = draft.prefill(prompt_d)
    logits = torch.cat([first[None], draft.extend(state, tokens[:-1])]) if len(tokens) > 1 else first[None]
    return logits.argmax(-1).tolist()


def draft_agreement(
    target: VideoLLM, draft: VideoLLM, video: DecodedVideo, prompt: str, tokens: list[int]
) -> list[tuple[bool, bool]]:
    """Per position of the target's answer: (draft's greedy token == target's, is anchor)."""
    if not tokens:
        return []
    guesses = draft_guesses(draft, video, prompt, tokens)
    text, offsets = _offsets(target, tokens)
    anchors = token_anchor_mask(text, offsets)
    return [(g == t, a) for g, t, a in zip(guesses, tokens, anchors)]


def _offsets(model: VideoLLM, tokens: list[int]) -> tuple[str, list[tuple[int, int]]]:
    """The decoded text and each token's character span in it."""
    spans, previous = [], 0
    for i in range(len(tokens)):
        end = len(model.decode(tokens[: i + 1]))
        spans.append((previous, end))
        previous = end
    return model.decode(tokens), spans


def evaluate_pair(
    target: VideoLLM,
    draft: VideoLLM,
    seeds: Iterable[int],
    draft_lengths: tuple[int, ...] = (5, 10),
    max_tokens: int = 80,
    progress: Callable[[], None] = lambda: None,
) -> dict:
    pair = LocalEngine(target, draft)
    alone = LocalEngine(draft)
    target_scores, draft_scores, agree = [], [], []
    by_kind: dict[str, list[bool]] = {}
    by_form: dict[str, list[bool]] = {}
    by_shapes: dict[str, list[bool]] = {}
    ms = {"target": [], "draft": [], "drafted": []}
    sd_counts = {k: {"identical": 0, "accepted": 0, "rounds": 0} for k in draft_lengths}
    count = 0
    for seed in seeds:
        clip = make_clip(seed)
        video = clip_video(clip)
        caption = ask(pair, video, clip.caption_prompt, "ar", 1, max_tokens)
        draft_caption = ask(alone, video, clip.caption_prompt, "ar", 1, max_tokens)
        target_scores.append(score_caption(caption.text, clip))
        draft_scores.append(score_caption(draft_caption.text, clip))
        _per_token_ms(caption, ms["target"])
        _per_token_ms(draft_caption, ms["draft"])
        for qa in clip.qa:
            answer = ask(pair, video, qa.question, "ar", 1, ANSWER_TOKENS).text
            target_scores.append(score_answer(answer, qa))
            by_kind.setdefault(qa.kind, []).append(target_scores[-1])
            by_form.setdefault("choice" if qa.options else "open", []).append(target_scores[-1])
            by_shapes.setdefault(str(clip.spec.count), []).append(target_scores[-1])
            draft_answer = ask(alone, video, qa.question, "ar", 1, ANSWER_TOKENS).text
            draft_scores.append(score_answer(draft_answer, qa))
        agree.extend(draft_agreement(target, draft, video, clip.caption_prompt, caption.token_ids))
        for k in draft_lengths:
            sd = ask(pair, video, clip.caption_prompt, "sd", k, max_tokens)
            sd_counts[k]["identical"] += sd.token_ids == caption.token_ids
            sd_counts[k]["accepted"] += sd.stats.accepted
            sd_counts[k]["rounds"] += sd.stats.rounds
            if k == SD_COST_K and sd.stats.drafted:
                ms["drafted"].append(1e3 * sd.stats.draft_compute_s / sd.stats.drafted)
        count += 1
        progress()
    t, d = aggregate(target_scores), aggregate(draft_scores)
    target_ms, draft_ms = _median(ms["target"]), _median(ms["draft"])
    return {
        "clips": count,
        "target_fact_f1": t["fact_f1"],
        "target_qa_acc": t["qa_accuracy"],
        "draft_fact_f1": d["fact_f1"],
        "draft_qa_acc": d["qa_accuracy"],
        "target_qa_acc_by_kind": _rates(by_kind),
        "target_qa_acc_by_form": _rates(by_form),
        "target_qa_acc_by_shapes": _rates(by_shapes),
        "agreement_anchor": _rate([ok for ok, anchor in agree if anchor]),
        "agreement_filler": _rate([ok for ok, anchor in agree if not anchor]),
        "anchor_positions": sum(1 for _, anchor in agree if anchor),
        "filler_positions": sum(1 for _, anchor in agree if not anchor),
        "target_ms_per_token": target_ms,
        "draft_ms_per_token": draft_ms,
        "cost_ratio": draft_ms / target_ms if target_ms else None,
        "sd_draft_ms_per_token": _median(ms["drafted"]),
        "sd_cost_ratio": _median(ms["drafted"]) / target_ms if target_ms and ms["drafted"] else None,
        "sd_identical_to_ar": {str(k): c["identical"] / count for k, c in sd_counts.items()},
        "tau": {str(k): c["accepted"] / max(c["rounds"], 1) for k, c in sd_counts.items()},
    }


SD_COST_K = 5  # the draft length whose rounds time a draft token inside `sd`


def eval_seeds(n: int) -> range:
    return split_seeds("eval", n)


def _per_token_ms(result: GenerationResult, out: list[float]) -> None:
    s = result.stats
    if s.emitted > 1 and s.decode_s > 0:
        out.append(1e3 * s.decode_s / (s.emitted - 1))


def _median(values: list[float]) -> Optional[float]:
    return statistics.median(values) if values else None


def _rates(groups: dict[str, list[bool]]) -> dict[str, Optional[float]]:
    return {key: _rate(flags) for key, flags in sorted(groups.items())}


def _rate(flags: list[bool]) -> Optional[float]:
    return sum(flags) / len(flags) if flags else None
