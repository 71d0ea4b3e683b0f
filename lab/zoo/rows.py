"""Training rows of stage two: a clip's turns encoded into token ids, labels and the labels'
anchor flags, and batches with their loss weights (`label_weights`).

`encode_conversation` lays the turns out one after another, as in a chat; `encode_siblings`
lays them out as siblings that each see the video and themselves only, as a served question
does. `collate` right-pads rows into the tensors a family's forward takes, with the 4-D mask
and positions sibling rows need.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from lab.zoo.supervision import IGNORE
from specvid.models.adapter import VideoLLM
from specvid.shapesworld.anchors import token_anchor_mask

# Both zoo families speak ChatML; a follow-up user turn after an answer's `<|im_end|>`.
FOLLOW_UP = "\n<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"


def answer_tokens(tokenizer, answer: str) -> tuple[list[int], list[bool]]:
    """An answer's tokens and the `<|im_end|>` that closes it (what the loss is put on), and
    which of them cover a visual anchor (`anchors.token_anchor_mask`; never the `<|im_end|>`)."""
    encoded = tokenizer(answer, return_offsets_mapping=True)
    anchors = token_anchor_mask(answer, encoded["offset_mapping"])
    return encoded["input_ids"] + [tokenizer.convert_tokens_to_ids("<|im_end|>")], anchors + [False]


def encode_conversation(adapter: VideoLLM, frames: np.ndarray, turns: list[tuple[str, str]]) -> dict:
    """One training row: input ids, labels on every answer, and the family's vision tensors."""
    tokenizer = adapter.tokenizer
    video_prompt = adapter.build_prompt(frames, turns[0][0])
    ids = video_prompt.input_ids.tolist()
    labels, anchors = [IGNORE] * len(ids), [False] * len(ids)
    for i, (prompt, answer) in enumerate(turns):
        if i:
            follow_up = tokenizer(FOLLOW_UP.format(prompt=prompt))["input_ids"]
            ids += follow_up
            labels += [IGNORE] * len(follow_up)
            anchors += [False] * len(follow_up)
        answer, answer_anchors = answer_tokens(tokenizer, answer)
        ids += answer
        labels += answer
        anchors += answer_anchors
    return {
        "input_ids": ids,
        "labels": labels,
        "anchors": anchors,
        "vision": video_prompt.vision_inputs,
        "video_grid": video_prompt.video_grid,
    }


def encode_siblings(adapter: VideoLLM, frames: np.ndarray, turns: list[tuple[str, str]]) -> dict:
    """One training row whose turns are siblings: each sees the video and itself, not the others.

    Layout `[prefix | tail_1 answer_1 | tail_2 answer_2 | ...]`: the prefix is the prompt up to
    its last video placeholder, a tail the rest of that turn's single-question prompt. Every
    segment's positions restart where the prefix ends and `segments` (0 = prefix, j = turn j)
    feeds `sibling_attention_mask`, so each answer is computed exactly as a served one, asked
    straight after the video, while the video is encoded once for all of them.
    """
    first = adapter.build_prompt(frames, turns[0][0])
    prefix_len = int(torch.nonzero(first.input_ids == adapter.video_token_id).max()) + 1
    ids = first.input_ids[:prefix_len].tolist()
    labels, segments, shifts = [IGNORE] * prefix_len, [0] * prefix_len, [0] * prefix_len
    anchors = [False] * prefix_len
    for turn, (prompt, answer) in enumerate(turns, start=1):
        tail = adapter.text_after_video(prompt)
        answer, answer_anchors = answer_tokens(adapter.tokenizer, answer)
        length = len(tail) + len(answer)
        shifts += [len(ids) - prefix_len] * length  # how far past its served position a token sits
        ids += tail + answer
        labels += [IGNORE] * len(tail) + answer
        anchors += [False] * len(tail) + answer_anchors
        segments += [turn] * length
    row = replace(first, input_ids=torch.tensor(ids))
    positions = adapter.prompt_positions(row) - torch.tensor(shifts)  # [P, L]
    return {
        "input_ids": ids,
        "labels": labels,
        "anchors": anchors,
        "segments": segments,
        "positions": positions,
        "vision": first.vision_inputs,
        "video_grid": first.video_grid,
    }


PAD_SEGMENT = -1


def sibling_attention_mask(segments: torch.Tensor) -> torch.Tensor:
    """Which keys each query may attend: causal, and within its own segment or the prefix.

    segments [B, L] (0 = shared prefix, j > 0 = turn j, `PAD_SEGMENT` = padding) -> [B, 1, L, L]
    bool, True = attend, the custom 4-D mask transformers passes to SDPA unchanged. A padding
    query still sees the prefix, so no softmax row is empty.
    """
    length = segments.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    query, key = segments[:, :, None], segments[:, None, :]
    visible = (key == 0) | ((key == query) & (key != PAD_SEGMENT))
    return (causal & visible)[:, None]


def collate(rows: list[dict], pad_id: int, video_token_id: int, family: str) -> dict:
    """Right-pad a batch and stack the vision tensors the family's forward expects.

    Rows from `encode_siblings` also get their 4-D attention mask and position ids.
    """
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[i, :n] = torch.tensor(r["input_ids"])
        labels[i, :n] = torch.tensor(r["labels"])
        mask[i, :n] = 1
    batch = {"input_ids": ids, "labels": labels, "attention_mask": mask}
    if "segments" in rows[0]:
        batch.update(_sibling_layout(rows, width, family))
    vision = [r["vision"] for r in rows]
    batch["pixel_values_videos"] = torch.cat([v["pixel_values_videos"] for v in vision])
    if family == "qwen2_5_vl":
        batch["video_grid_thw"] = torch.cat([v["video_grid_thw"] for v in vision])
        batch["second_per_grid_ts"] = torch.cat([v["second_per_grid_ts"] for v in vision])
        batch["mm_token_type_ids"] = (ids == video_token_id).int() * 2
    return batch


def label_weights(rows: list[dict], width: int, anchor_weight: float) -> torch.Tensor:
    """The loss weight of every position of a collated batch: [B, width].

    0 where there is no label, 1 on a filler token, `anchor_weight` on a token that covers an
    anchor (`TrainConfig.anchor_weight`).
    """
    weights = torch.zeros((len(rows), width))
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        labelled = torch.tensor(r["labels"]) != IGNORE
        anchors = torch.tensor(r["anchors"], dtype=torch.bool)
        weights[i, :n] = labelled.float() * torch.where(anchors, anchor_weight, 1.0)
    return weights


def _sibling_layout(rows: list[dict], width: int, family: str) -> dict:
    segments = torch.full((len(rows), width), PAD_SEGMENT, dtype=torch.long)
    positions = torch.zeros((rows[0]["positions"].shape[0], len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r["segments"])
        segments[i, :n] = torch.tensor(r["segments"])
        positions[:, i, :n] = r["positions"]
    # M-RoPE takes [3, B, L]; 1-D families take [B, L].
    position_ids = positions if family == "qwen2_5_vl" else positions[0]
    return {"attention_mask": sibling_attention_mask(segments), "position_ids": position_ids}
