"""Stage one of zoo training: teach each vision tower what sits under every video token.

Real Video-LLMs start from a pretrained vision encoder; the zoo's towers start from random
weights, and the language model cannot both invent visual features and learn to look them up
within the CPU budget (measured: with oracle features standing in for the tower, teacher-forced
anchor accuracy after 300 language steps is 0.53; with a random tower 0.37 after 600). So the
tower is first trained alone, with a linear probe, to name the colour, kind and motion of the
shape under each token of the (t, h, w) grid and the clip's background. The probe is then
kept as an auxiliary objective of stage two, so the tower goes on learning the shapes while the
language model learns to read it (`recorded_video_features`); it is not part of the exported
checkpoint.

Stage one can open with a slab phase (`slab_steps`, off in the shipped recipe). Telling the six
silhouettes apart is what a tower learns slowest, and it needs optimiser steps more than whole
clips: a slab is the two consecutive frames one temporal row of tokens covers, drawn straight
from the renderer (no mp4 round trip), asked for colour, kind and background only, at a quarter
of a clip's cost. Whole clips (through mp4, as served models see them) follow and add motion,
which needs the frames before and after. lab/zoo/HISTORY.md has what the slab phase measured.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from lab.zoo.loop import mixed_precision, prefetched
from specvid.models.adapter import VideoLLM, VideoPrompt
from specvid.shapesworld.vocabulary import MOTION_OPTIONS
from specvid.shapesworld.world import (
    BACKGROUNDS,
    MOTIONS,
    SHAPE_COLOURS,
    SHAPE_KINDS,
    ClipSpec,
    clip_spec_for_seed,
    draw_seeds,
    frame_times,
    render_frames,
    stream_rng,
)

COLOURS, KINDS, BACKGROUND_NAMES = list(SHAPE_COLOURS), list(SHAPE_KINDS), list(BACKGROUNDS)
# Label columns: colour, kind and motion of the shape under the token (0 = no shape), background.
CLASSES = (1 + len(COLOURS), 1 + len(KINDS), 1 + len(MOTIONS), len(BACKGROUND_NAMES))
MOTION_COLUMN = 2
IGNORE = -100  # a label column the probe is not asked about (motion, on a single slab)


@dataclass(frozen=True)
class VisionStageConfig:
    slab_steps: int = 0  # phase one: single slabs; colour, kind and background (see lab/zoo/HISTORY.md)
    slab_batch_size: int = 16
    steps: int = 500  # phase two: whole clips; motion as well
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.01
    bf16_autocast: bool = True  # `loop.mixed_precision`
    slab_frames: int = 2  # one Qwen2.5-VL temporal patch; two frame rows for LLaVA-OneVision

    @property
    def total_steps(self) -> int:
        return self.slab_steps + self.steps


def token_labels(spec: ClipSpec, grid: tuple[int, int, int], times: np.ndarray) -> torch.Tensor:
    """What each token of a (t, h, w) grid shows, in (t, h, w) order.

    `times` are the clip times of the frames the grid was made from (`frame_times(n)` for a
    whole clip of n frames); each temporal row of tokens covers an equal share of them.
    """  # -> [t*h*w, 4]
    t, h, w = grid
    group_times = np.asarray(times, dtype=float).reshape(t, -1).mean(axis=1)  # one time per row
    labels = np.zeros((t, h, w, 4), dtype=np.int64)
    labels[..., 3] = BACKGROUND_NAMES.index(spec.background)
    for g, time in enumerate(group_times):
        for i in range(h):
            for j in range(w):
                track = _shape_under(spec, time, row=i, col=j, grid=(h, w))
                if track is not None:
                    labels[g, i, j, :3] = (
                        1 + COLOURS.index(track.color),
                        1 + KINDS.index(track.kind),
                        1 + MOTIONS.index(track.motion),
                    )
    return torch.from_numpy(labels.reshape(-1, 4))


def _shape_under(spec: ClipSpec, time: float, row: int, col: int, grid: tuple[int, int]):
    """The visible shape nearest the cell's centre that covers it, or whose centre is in the cell."""
    h, w = grid
    x, y = (col + 0.5) / w, (row + 0.5) / h
    best, best_distance = None, float("inf")
    for track in spec.tracks:
        if not track.visible(time):
            continue
        cx, cy, radius = track.geometry(time)
        distance = float(np.hypot(cx - x, cy - y))
        centre_here = (int(cx * w), int(cy * h)) == (col, row)
        if (distance < radius or centre_here) and distance < best_distance:
            best, best_distance = track, distance
    return best


def vision_parameters(model) -> list[torch.nn.Parameter]:
    """The vision tower and its projector into the language model: what stage one trains."""
    language = {id(p) for p in model.model.language_model.parameters()} | {
        id(p) for p in model.lm_head.parameters()
    }
    return [p for p in model.parameters() if id(p) not in language]


# The word that names each probe class, column by column in `CLASSES` order (None: no shape).
# A motion is named by the last word of its multiple-choice option ("moves left" -> "left",
# "stays still" -> "still").
CLASS_WORDS: tuple[tuple[str | None, ...], ...] = (
    (None, *COLOURS),
    (None, *KINDS),
    (None, *(MOTION_OPTIONS[m].split()[-1] for m in MOTIONS)),
    tuple(BACKGROUND_NAMES),
)


def class_token_ids(tokenizer) -> torch.Tensor:
    """The token id of each probe class's word (" red", " circle", ...), -1 for "no shape"."""
    # -> [sum(CLASSES)]
    ids = []
    for word in (w for column in CLASS_WORDS for w in column):
        if word is None:
            ids.append(-1)
            continue
        pieces = tokenizer(" " + word, add_special_tokens=False)["input_ids"]
        if len(pieces) != 1:
            raise ValueError(
                f"probe class word {word!r} is {len(pieces)} tokens; the zoo tokenizer keeps anchors whole"
            )
        ids.append(pieces[0])
    return torch.tensor(ids)


class TokenProbe(torch.nn.Module):
    """A linear read-out of `token_labels` from projected video features.

    Word-aligned (`token_ids` given): a class that has a word is read out along that word's
    input embedding in the language model, so the tower learns to put a red triangle's token
    where the words " red" and " triangle" point. The language model then finds "the triangle"
    among the video tokens by the same match that relates two mentions of a word, and reads its
    colour as the word " red". Only "no shape" keeps a free row. A learnt scale (initialised so
    a feature equal to a word's embedding gives logit 1) lets features stay at the embeddings'
    norm instead of growing to make confident logits. A free probe has neither, so its state is
    what it was before word alignment existed.
    """

    def __init__(
        self, hidden: int, seed: int, token_ids: torch.Tensor | None = None, word_norm_sq: float = 1.0
    ):
        super().__init__()
        self.linear = torch.nn.Linear(hidden, sum(CLASSES))
        with torch.no_grad():
            self.linear.weight.normal_(0.0, 0.02, generator=torch.Generator().manual_seed(seed))
            self.linear.bias.zero_()
        self.register_buffer("token_ids", token_ids)  # [sum(CLASSES)]; None for a free probe
        self.log_scale = None if token_ids is None else torch.nn.Parameter(torch.tensor(-math.log(word_norm_sq)))

    @property
    def word_aligned(self) -> bool:
        return self.token_ids is not None

    def logits(self, features: torch.Tensor, word_embeddings: torch.Tensor | None = None) -> torch.Tensor:
        # features [n, hidden], word_embeddings [vocab, hidden] -> [n, sum(CLASSES)]
        if not self.word_aligned:
            return self.linear(features)
        if word_embeddings is None:
            raise ValueError("a word-aligned probe needs the language model's input embeddings")
        has_word = (self.token_ids >= 0)[:, None]
        # The words are the fixed target here: the probe moves the tower, never the vocabulary.
        words = word_embeddings.detach()[self.token_ids.clamp(min=0)] * self.log_scale.exp()
        return F.linear(features, torch.where(has_word, words, self.linear.weight), self.linear.bias)

    def loss(
        self, features: torch.Tensor, labels: torch.Tensor, word_embeddings: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Summed cross-entropy of the label columns that are asked (not all `IGNORE`)."""
        # features [n, hidden], labels [n, 4]
        logits = self.logits(features, word_embeddings).split(CLASSES, dim=-1)
        asked = [i for i in range(len(CLASSES)) if (labels[:, i] != IGNORE).any()]
        return sum(F.cross_entropy(logits[i], labels[:, i], ignore_index=IGNORE) for i in asked)


def probe_for(model, tokenizer, seed: int, word_aligned: bool) -> TokenProbe:
    """The stage-one probe of a zoo model, word-aligned to its input embeddings or free."""
    hidden = model.config.get_text_config().hidden_size
    if not word_aligned:
        return TokenProbe(hidden, seed)
    ids = class_token_ids(tokenizer)
    words = model.get_input_embeddings().weight.detach()[ids.clamp(min=0)]
    return TokenProbe(hidden, seed, ids, word_norm_sq=float(words.pow(2).sum(-1).mean()))


@contextmanager
def recorded_video_features(model) -> Iterator[list[torch.Tensor]]:
    """Record, per clip and with gradients, the video features the model's own forward computes.

    Lets stage two put the probe loss on the very features the language model reads, without a
    second pass through the tower. Each record is one clip's grid rows in (t, h, w) order,
    followed by any family extras (LLaVA-OneVision's newline row).
    """
    inner = model.model
    original = inner.get_video_features
    records: list[torch.Tensor] = []

    def recording(*args, **kwargs):
        out = original(*args, **kwargs)
        pooled = out.pooler_output  # Qwen2.5-VL: a tuple per clip; LLaVA-OV: [clips, rows, hidden]
        records.extend(pooled if isinstance(pooled, (tuple, list)) else pooled.unbind(0))
        return out

    inner.get_video_features = recording  # an instance attribute shadows the class method
    try:
        yield records
    finally:
        del inner.get_video_features


def pretrain_vision(
    adapter: VideoLLM,
    probe: TokenProbe,
    cfg: VisionStageConfig,
    clip_pool: Sequence[int],
    frames_of: Callable[[int], np.ndarray],
    seed: int,
    num_frames: int = 8,
    size: int = 112,
    progress: Callable[[int, float], None] = lambda step, loss: None,
) -> None:
    """Train the tower + projector of `adapter.model`, with `probe`, to predict `token_labels`.

    Phase one: `cfg.slab_steps` steps of `cfg.slab_batch_size` slabs (`slab_example`). Phase two:
    `cfg.steps` steps of `cfg.batch_size` whole clips from `clip_pool`, `frames_of(seed)`
    rendering one. `progress(step, loss)` counts both phases, up to `cfg.total_steps`.
    """
    model = adapter.model
    optimizer = torch.optim.AdamW(
        vision_parameters(model) + list(probe.parameters()), lr=cfg.lr, weight_decay=cfg.weight_decay
    )
    model.train()

    def examples_at(step: int) -> list[tuple[VideoPrompt, torch.Tensor]]:
        rng = stream_rng(seed, step)
        if step < cfg.slab_steps:
            seeds = draw_seeds(rng, clip_pool, cfg.slab_batch_size)
            examples = [slab_example(s, rng, cfg.slab_frames, num_frames, size) for s in seeds]
        else:
            seeds = draw_seeds(rng, clip_pool, cfg.batch_size)
            examples = [whole_clip_example(clip_seed, frames_of(clip_seed)) for clip_seed in seeds]
        prompts = [adapter.build_prompt(frames, "") for frames, _ in examples]
        return [(p, label_of(p.video_grid)) for p, (_, label_of) in zip(prompts, examples)]

    for step, examples in enumerate(prefetched(examples_at, 0, cfg.total_steps)):
        with mixed_precision(cfg.bf16_autocast):
            features = [adapter.video_features(prompt) for prompt, _ in examples]  # [t*h*w, hidden] each
            targets = torch.cat([labels for _, labels in examples])
            loss = probe.loss(torch.cat(features), targets, model.get_input_embeddings().weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        progress(step + 1, loss.item())


LabelsOf = Callable[[tuple[int, int, int]], torch.Tensor]  # token grid -> [t*h*w, 4] labels


def whole_clip_example(clip_seed: int, frames: np.ndarray) -> tuple[np.ndarray, LabelsOf]:
    """A whole clip's frames and its labels, motion included."""
    times = frame_times(len(frames))
    return frames, lambda grid: token_labels(clip_spec_for_seed(clip_seed), grid, times)


def slab_example(
    clip_seed: int, rng: np.random.Generator, slab_frames: int, num_frames: int, size: int
) -> tuple[np.ndarray, LabelsOf]:
    """Consecutive frames of one temporal row of a clip, at a random row; motion not asked.

    Which way a shape moves is not in a slab alone, so its motion label is `IGNORE`.
    """
    spec = clip_spec_for_seed(clip_seed)
    row = int(rng.integers(num_frames // slab_frames))
    times = frame_times(num_frames)[row * slab_frames : (row + 1) * slab_frames]
    frames = render_frames(spec, times, size)

    def labels(grid: tuple[int, int, int]) -> torch.Tensor:
        out = token_labels(spec, grid, times)
        out[:, MOTION_COLUMN] = IGNORE
        return out

    return frames, labels
