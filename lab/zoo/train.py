"""Train the zoo's tiny Video-LLMs on ShapesWorld, on a CPU.

Two stages per model. Stage one (`supervision.py`) trains the vision tower and projector alone
to say what lies under each video token. Stage two trains the whole model on conversations:
each example is one clip with up to `turns` of its questions (or its caption and fewer
questions), in the family's chat format, the loss on every answer and its closing
`<|im_end|>` (tokens that cover an anchor weighted `anchor_weight`), plus the stage-one probe
loss on the video features the forward computed (weight `probe_weight`). Packing a clip's questions into one sequence gives the language model several
supervised lookups per video forward (measured: teacher-forced anchor accuracy 0.36 after 400
steps packed vs 0.31 after 1800 single-question steps). The turns follow one another as in a
chat (`rows.encode_conversation`), or, with `sibling_turns`, each sees the video and itself only
(`rows.encode_siblings`), as a served question does. The text is drawn afresh from the
grammar every time, so fillers vary across epochs while the visual facts stay fixed: the model
learns real uncertainty over fillers and none over anchors.

Every step renders fresh clips (~9 ms each with the mp4 round trip, PyAV encode +
`specvid.video` decode, so training sees the compression served models see). A fixed pool of
3000 clips was tried first: the target partly memorised it (its wrong-clip loss gap on
questions was 0.18 nats on pool clips but 0.07 on held-out clips). Prompts are
built by the model's own adapter, so training and inference share one chat format.

Training is seeded and resumable: state is saved after stage one and every `save_every` steps
of stage two under `work_dir`; the finished model is exported as safetensors into the
package's checkpoint directory.
"""

from __future__ import annotations

import json
import math
from copy import deepcopy as copy_module
from dataclasses import dataclass, fields, is_dataclass, replace
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from lab.zoo.loop import mixed_precision, prefetched
from lab.zoo.recipes import ZooModel, checkpoint_dir
from lab.zoo.rows import collate, encode_conversation, encode_siblings, label_weights
from lab.zoo.supervision import (
    IGNORE,
    TokenProbe,
    VisionStageConfig,
    pretrain_vision,
    probe_for,
    recorded_video_features,
    token_labels,
)
from lab.zoo.tokenizer import train_zoo_tokenizer, zoo_tokenizer
from specvid.config import VideoLimits, VideoSampling
from specvid.models.adapter import VideoLLM
from specvid.models.loader import ADAPTERS
from specvid.models.tiny import build_tiny_model
from specvid.shapesworld.clips import encode_clip_mp4, make_clip
from specvid.shapesworld.language import describe_clip
from specvid.shapesworld.questions import (
    QA,
    contrast_questions,
    inventory,
    reasoned_answer,
)
from specvid.shapesworld.vocabulary import Picker
from specvid.shapesworld.world import (
    clip_spec_for_seed,
    draw_seeds,
    frame_times,
    split_seeds,
    stream_rng,
)
from specvid.video import decode_video


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1500
    batch_size: int = 16
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup: int = 60
    weight_decay: float = 0.01
    caption_share: float = 0.2
    turns: int = 6  # questions packed into one training sequence
    vision: VisionStageConfig = VisionStageConfig()
    probe_weight: float = 0.5  # stage two's auxiliary probe loss; 0 turns it off
    sibling_turns: bool = False  # each turn sees the video and itself only (`rows.encode_siblings`)
    lookups_first: bool = False  # order a conversation's questions by `turn_rank` (HISTORY.md: tried)
    word_aligned_probe: bool = False  # `supervision.probe_for` (HISTORY.md: tried, not adopted)
    reasoned_answers: bool = False  # `questions.reasoned_answer` (qwen-tiny's target; see the card)
    # With reasoned answers, whether yes/no answers state theirs too, or only multiple choice. A
    # yes/no reasoning about a shape the clip holds can be copied from the question (HISTORY.md,
    # "Diagnosed"), which may teach reading the question instead of the video.
    reasoned_yes_no: bool = True
    # With reasoned yes/no answers, whether their reasoning lists every shape of the clip
    # (`questions.inventory`) instead of the asked kind's colour (HISTORY.md: "Tried: reasoning
    # for multiple choice only" and its Next list).
    yes_no_inventory: bool = False
    contrast_turns: bool = False  # yes/no and choice turns as `contrast_questions` pairs (qwen-tiny's target)
    # The loss weight of an answer token that covers a visual anchor, against 1 for a filler
    # token: anchors are 30% of the answer tokens of qwen-tiny's rows, and the fillers' drawn
    # phrasings keep a loss that no model can remove.
    anchor_weight: float = 1.0
    bf16_autocast: bool = True  # stage two's forward in bfloat16 autocast (`mixed_precision`)
    patch_embedding_gain: float = 10.0
    train_clips: int = 10**9  # distinct clips drawn from; fresh ones every step by default
    num_frames: int = 8  # stage one's clips, and stage two's unless `frame_cycle` is set
    # Stage two's frame count at step s is frame_cycle[s % len(frame_cycle)], e.g. (8, 8, 16):
    # a model that only ever sees 8-frame prompts learns where its answers sit after them (model
    # card: llava-tiny's 1-D positions then fail at 16 frames).
    frame_cycle: tuple[int, ...] = ()
    size: int = 112
    save_every: int = 100
    seed: int = 0


_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}


def with_overrides(cfg, assignments: list[str]):
    """`cfg` with `KEY=VALUE` assignments applied; `vision.steps=800` reaches a nested config.

    Each value is parsed as the type of the field's current value, so a typo or a wrong type is
    an error naming the field, never a silently ignored setting.
    """
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        if not sep:
            raise ValueError(f"expected KEY=VALUE, got {assignment!r}")
        cfg = _assign(cfg, key.strip().split("."), text.strip(), key.strip())
    return cfg


def _assign(cfg, path: list[str], text: str, key: str):
    names = {f.name for f in fields(cfg)}
    if path[0] not in names:
        raise ValueError(f"unknown setting {key!r}; known: {', '.join(sorted(names))}")
    current = getattr(cfg, path[0])
    if len(path) > 1:
        if not is_dataclass(current):
            raise ValueError(f"{key!r}: {path[0]!r} has no settings of its own")
        return replace(cfg, **{path[0]: _assign(current, path[1:], text, key)})
    if is_dataclass(current):
        raise ValueError(f"{key!r} is a group of settings; set one of them, e.g. {key}.steps=...")
    return replace(cfg, **{path[0]: _parse_as(current, text, key)})


def _parse_as(current, text: str, key: str):
    try:
        if isinstance(current, tuple):  # the tuple settings hold counts: "8,16" -> (8, 16)
            values = tuple(int(part) for part in text.split(",") if part.strip())
            if not values or min(values) < 1:
                raise ValueError
            return values
        if isinstance(current, bool):
            if text.lower() not in _TRUE | _FALSE:
                raise ValueError
            return text.lower() in _TRUE
        return type(current)(text)
    except ValueError:
        kind = "comma-separated list of positive ints" if isinstance(current, tuple) else type(current).__name__
        raise ValueError(f"{key!r} takes a {kind}, got {text!r}") from None


def frames_at(step: int, cfg: TrainConfig) -> int:
    """Stage two's frame count at `step`: `cfg.frame_cycle` in turn, else `cfg.num_frames`."""
    return cfg.frame_cycle[step % len(cfg.frame_cycle)] if cfg.frame_cycle else cfg.num_frames


def training_frames(seed: int, num_frames: int, size: int) -> np.ndarray:
    """A training clip as served models see it: rendered, encoded to mp4, decoded by PyAV."""
    data = encode_clip_mp4(make_clip(seed, num_frames=num_frames, size=size))
    sampling = VideoSampling(num_frames=num_frames, width=size, height=size)
    return decode_video(data, sampling, VideoLimits()).frames


# Where a question goes in a packed conversation (`lookups_first`). Served models are asked one
# question at a time, so a lookup only counts if it was learnt from the video; but once a turn
# has named a shape in full ("What does the red triangle do?", "Yes, there is a red triangle."),
# a later "What colour is the triangle?" can be answered by copying from the text. So the
# lookups by kind come first; shape-by-colour and order follow (their answers name a shape in
# full, and captions already teach the colour -> kind direction); the motion questions, whose
# prompts name every shape, come last. Within a rank the order stays random.
TURN_RANK = {"color": 0, "exists": 0, "shape": 1, "order": 1, "count": 2, "background": 2, "motion": 3}
CHOICE_RANK = 3  # a multiple-choice question lists its options, often a shape's full name


def turn_rank(qa: QA) -> int:
    return CHOICE_RANK if qa.options else TURN_RANK[qa.kind]


def example_turns(seed: int, rng: np.random.Generator, cfg: TrainConfig) -> list[tuple[str, str]]:
    """(prompt, answer) turns for a clip: some of its questions, or its caption and fewer.

    With `cfg.contrast_turns` the drawn yes/no and multiple-choice questions give way to the
    four of `contrast_questions`; with `cfg.lookups_first` the questions are ordered by
    `turn_rank`; with `cfg.reasoned_answers` an answer that has a reasoning states it first.
    """
    spec = clip_spec_for_seed(seed)
    text = describe_clip(spec, rng)
    drawn = [text.qa[i] for i in rng.permutation(len(text.qa))[: cfg.turns]]
    contrast: list[QA] = []
    if cfg.contrast_turns:
        drawn = [qa for qa in drawn if qa.kind != "exists" and not qa.options]
        contrast = list(contrast_questions(spec, Picker(rng)))
    if cfg.lookups_first:
        drawn.sort(key=turn_rank)  # stable: random within a rank; a caption keeps the first ones
    with_caption = rng.random() < cfg.caption_share
    if with_caption:
        # A caption is as long as several answers; it replaces two drawn questions (never a
        # contrast pair, which is worth nothing without both halves).
        drawn = drawn[: max(0, cfg.turns - 2)]
    questions = sorted(drawn + contrast, key=turn_rank) if cfg.lookups_first else drawn + contrast
    turns = [(qa.question, _reference_answer(qa, spec, cfg)) for qa in questions]
    if with_caption:
        turns = [(text.caption_prompt, text.caption)] + turns
    return turns


def _reference_answer(qa: QA, spec, cfg: TrainConfig) -> str:
    """The answer a turn is trained on: plain, or after its reasoning (`cfg.reasoned_answers`)."""
    if not (cfg.reasoned_answers and (cfg.reasoned_yes_no or qa.options)):
        return qa.answer
    if cfg.yes_no_inventory and qa.kind == "exists":
        qa = replace(qa, reasoning=inventory(spec))
    return reasoned_answer(qa)


def amplify_patch_embedding(model, gain: float) -> None:
    """Scale the vision tower's first projection at initialisation.

    With the usual 0.02 init, what differs between video tokens is ~3% of their projected norm;
    the language model then learns to treat video tokens as a constant and never looks at them
    (measured: held-out loss with the wrong clip equals loss with the right one after 1000
    steps). A 10x larger patch projection lets token content dominate from the first step.
    """
    config = model.config
    if config.model_type == "qwen2_5_vl":
        projection = model.model.visual.patch_embed.proj
    else:
        projection = model.model.vision_tower.embeddings.patch_embedding
    with torch.no_grad():
        projection.weight.mul_(gain)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to `min_lr_ratio` of the peak."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def shared_tokenizer(family: str, work_dir: Path):
    """The zoo tokenizer, trained once and reused by every model of the family."""
    path = work_dir / "merges.json"
    if path.is_file():
        merges = [tuple(m) for m in json.loads(path.read_text())]
    else:
        merges = train_zoo_tokenizer()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(merges))
    return zoo_tokenizer(family, merges)


def train_model(
    model_spec: ZooModel,
    cfg: TrainConfig,
    work_dir: Path,
    progress: Callable[[str, int, int, float], None] = lambda stage, step, total, loss: None,
    out_dir: Optional[Path] = None,
) -> Path:
    """Train (or resume) one zoo model and export it; returns the checkpoint directory.

    `progress(stage, step, total, loss)` is called after every step of the "vision" and the
    "language" stage.
    """
    torch.manual_seed(cfg.seed + model_spec.seed)
    tokenizer = shared_tokenizer(model_spec.family, work_dir)
    model, tokenizer = build_tiny_model(model_spec.family, model_spec.size, model_spec.seed, tokenizer)
    amplify_patch_embedding(model, cfg.patch_embedding_gain)
    adapter = ADAPTERS[model_spec.family](model, tokenizer, name=model_spec.name)
    probe = probe_for(model, tokenizer, cfg.seed + model_spec.seed, cfg.word_aligned_probe)
    state_path = work_dir / model_spec.name / "state.pt"
    clip_pool = split_seeds("train", cfg.train_clips)
    if not state_path.is_file():  # a saved state means stage one is done
        pretrain_vision(
            adapter,
            probe,
            cfg.vision,
            clip_pool,
            lambda seed: training_frames(seed, cfg.num_frames, cfg.size),
            seed=cfg.seed * 1_000_003 + model_spec.seed + 1,
            num_frames=cfg.num_frames,
            size=cfg.size,
            progress=lambda step, loss: progress("vision", step, cfg.vision.total_steps, loss),
        )
    optimizer = torch.optim.AdamW(
        list(model.parameters()) + list(probe.parameters()), lr=cfg.lr, weight_decay=cfg.weight_decay
    )
    if not state_path.is_file():
        _save_state(state_path, model, probe, optimizer, 0)
    step = _resume(state_path, model, probe, optimizer)
    model.train()
    batches = prefetched(lambda s: language_batch(adapter, model_spec, cfg, clip_pool, s), step, cfg.steps)
    for rows, batch, probe_labels in batches:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        weights = label_weights(rows, batch["labels"].shape[1], cfg.anchor_weight)  # [B, L]
        with recorded_video_features(model) as grids, mixed_precision(cfg.bf16_autocast):
            logits = model(**without_labels(batch), use_cache=False).logits
            language_loss = weighted_next_token_loss(logits, batch["labels"], weights)
            loss = language_loss
            if cfg.probe_weight:
                loss = loss + cfg.probe_weight * _probe_loss(model, probe, grids, rows, probe_labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        progress("language", step, cfg.steps, language_loss.item())
        if step % cfg.save_every == 0 or step == cfg.steps:
            _save_state(state_path, model, probe, optimizer, step)
    return export(model, tokenizer, out_dir or checkpoint_dir(model_spec.name))


def without_labels(batch: dict) -> dict:
    """The forward's inputs; the loss is taken outside, with `weighted_next_token_loss`."""
    return {key: value for key, value in batch.items() if key != "labels"}


def weighted_next_token_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted mean cross-entropy of each labelled token given the positions before it.

    logits [B, L, V] (position t predicts token t + 1), labels [B, L], weights [B, L]. With
    weight 1 on every labelled position it is the mean a causal LM's own loss takes.
    """
    nll = F.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=IGNORE, reduction="none"
    )  # [B * (L - 1)]
    shifted = weights[:, 1:].flatten()
    return (nll * shifted).sum() / shifted.sum()


def language_batch(adapter: VideoLLM, model_spec: ZooModel, cfg: TrainConfig, clip_pool, step: int):
    """Stage two's batch at `step`: encoded rows, the collated tensors and the probe's labels.

    A function of `step` alone (its own random stream), so a resumed run sees the same data.
    """
    rng = stream_rng(cfg.seed * 1_000_003 + model_spec.seed, step)
    picks = draw_seeds(rng, clip_pool, cfg.batch_size)
    num_frames = frames_at(step, cfg)
    frames = [training_frames(seed, num_frames, cfg.size) for seed in picks]
    encode = encode_siblings if cfg.sibling_turns else encode_conversation
    rows = [encode(adapter, f, example_turns(s, rng, cfg)) for s, f in zip(picks, frames)]
    tokenizer = adapter.tokenizer
    batch = collate(rows, tokenizer.pad_token_id, adapter.video_token_id, model_spec.family)
    times = frame_times(num_frames)
    probe_labels = torch.cat(
        [token_labels(clip_spec_for_seed(s), row["video_grid"], times) for s, row in zip(picks, rows)]
    )  # [sum t*h*w, 4]
    return rows, batch, probe_labels


def _probe_loss(model, probe: TokenProbe, grids: list, rows: list[dict], labels: torch.Tensor):
    """The stage-one objective on the video features of this batch's forward."""
    sizes = [math.prod(row["video_grid"]) for row in rows]
    features = torch.cat([grid[:n] for grid, n in zip(grids, sizes, strict=True)])  # [sum n, hidden]
    return probe.loss(features, labels, model.get_input_embeddings().weight)


# Shipped weights are stored in bfloat16, half the bytes of float32; the loader casts them to
# the dtype a ModelSpec asks for (float32 by default), so decoding still runs in float32.
EXPORT_DTYPE = torch.bfloat16


def export(model, tokenizer, out: Path) -> Path:
    """Write a transformers checkpoint directory (config, bfloat16 safetensors, tokenizer)."""
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    copy = copy_module(model).to(EXPORT_DTYPE)  # the trained model itself stays float32
    copy.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def _resume(path: Path, model, probe, optimizer) -> int:
    if not path.is_file():
        return 0
    state = torch.load(path, weights_only=False)
    model.load_state_dict(state["model"])
    probe.load_state_dict(state["probe"])
    optimizer.load_state_dict(state["optimizer"])
    return int(state["step"])


def _save_state(path: Path, model, probe, optimizer, step: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    state = {"model": model.state_dict(), "probe": probe.state_dict(), "optimizer": optimizer.state_dict()}
    torch.save({**state, "step": step}, tmp)
    tmp.replace(path)  # atomic: an interrupted save never corrupts the last good state

