"""The family-neutral face of a Hugging Face Video-LLM.

The decoder never touches a transformers model directly: it builds a `VideoPrompt` (token ids
plus the family's pixel tensors), prefills it into a `DecodeState`, extends that state with
token blocks, and crops it on rejection. The prefill runs the transformers model; every later
block runs the project's own decode forward (`decoder.py`) over a static cache slot, eager or
compiled. Families differ in three places only, which
subclasses implement: how frames become pixel tensors, how pixels become projected video
embeddings, and how positions are laid out (3-D M-RoPE for Qwen2.5-VL, 1-D for LLaVA-OneVision).

Positions are always passed explicitly. A model's own position helpers keep per-instance state
(Qwen's `rope_deltas`) that would leak between concurrent sessions and would be wrong for a
pruned prefill; here each `DecodeState` carries its own offset instead.
"""

from __future__ import annotations

import functools
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Literal, Optional, Sequence

import numpy as np
import torch
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from specvid.errors import InvalidRequestError
from specvid.models.attention import VideoAttention, recording
from specvid.models.decoder import TextDecoder
from specvid.models.slot_decoding import DecodeState, SlotDecoding
from specvid.models.vision_share import TowerFeatures, tower_fingerprint

__all__ = ["DecodeState", "PositionLayout", "VideoLLM", "VideoPrompt"]


@dataclass(frozen=True)
class VideoPrompt:
    """A chat prompt with its video, ready for one model family.

    `input_ids` already holds one placeholder per video embedding. `video_index` lists the
    placeholder positions that belong to the (t, h, w) token grid in (t, h, w) order; a family
    may have extra video placeholders outside the grid (LLaVA-OneVision's trailing newline),
    which are never pruned.
    """

    input_ids: torch.Tensor  # [L] int64
    video_index: torch.Tensor  # [N] int64, positions in input_ids, (t, h, w) order
    video_grid: tuple[int, int, int]  # (t, h, w) of video tokens in the language model
    vision_inputs: dict[str, torch.Tensor] = field(repr=False)

    @property
    def num_video_tokens(self) -> int:
        return int(self.video_index.numel())

    def __len__(self) -> int:
        return int(self.input_ids.numel())


PositionLayout = Literal["original", "compact"]


class VideoLLM(SlotDecoding, ABC):
    """A loaded Video-LLM of one family, with the operations speculative decoding needs."""

    family: str = ""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, name: str = ""):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name or getattr(model.config, "_name_or_path", "") or self.family
        self.eos_token_ids: frozenset[int] = frozenset(self._eos_ids())
        self.special_token_ids: frozenset[int] = frozenset(tokenizer.all_special_ids)
        # Every forward holds this lock: a scored forward switches the shared model to eager
        # attention, and no other thread's forward may run while it does.
        self._forward_lock = threading.RLock()
        self.decoder = self._decoder_for(self.model)

    def replace_model(self, model: PreTrainedModel) -> None:
        """Swap in a transformed model (e.g. sharded for tensor parallelism) with the same weights."""
        self.model = model
        self.decoder = self._decoder_for(model)

    def _decoder_for(self, model: PreTrainedModel) -> TextDecoder:
        return TextDecoder(model.model.language_model, model.lm_head, self._position_rows)

    def compile(self, draft_loops: Sequence[int] = (), sampled_loops: bool = False) -> float:
        """Compile the decode forward now (warm-up included), and a draft's whole-proposal
        loops for `draft_loops`; returns the seconds it took."""
        with self._forward_lock:
            return self.decoder.compile(draft_loops=draft_loops, sampled_loops=sampled_loops)

    # ---- family hooks ---------------------------------------------------------------------

    @abstractmethod
    def frame_size(self, width: int, height: int) -> tuple[int, int]:
        """The (width, height) frames should be decoded at, given a requested size."""

    @abstractmethod
    def _vision_inputs(self, frames: np.ndarray, fps: float) -> tuple[dict, tuple[int, int, int], int]:
        """frames [T,H,W,3] uint8 -> (model pixel tensors, (t,h,w) token grid, placeholder count)."""

    def _video_embeddings(self, vision_inputs: dict) -> torch.Tensor:
        """Pixel tensors -> projected video embeddings [num placeholders, hidden]."""
        return self._encode_video(vision_inputs)[0]

    @abstractmethod
    def _encode_video(self, vision_inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixel tensors -> (projected video embeddings, the vision tower's output before the
        projection), from one run of the tower."""

    @abstractmethod
    def _project(self, tower_output: torch.Tensor, vision_inputs: dict) -> torch.Tensor:
        """The vision tower's output -> this model's projected video embeddings."""

    @abstractmethod
    def _tower(self) -> dict[str, torch.Tensor]:
        """The vision tower's weights: the part two models must share for a hand-over."""

    @abstractmethod
    def video_placeholders(self, num_frames: int, width: int, height: int) -> int:
        """Video placeholders `num_frames` frames of a decoded (width, height) become."""

    @abstractmethod
    def _prompt_text(self, prompt: str, num_placeholders: int) -> str:
        """The family's chat format with the video placeholders expanded."""

    @abstractmethod
    def prompt_positions(self, prompt: VideoPrompt) -> torch.Tensor:
        """Positions of every prompt token, [P, L] (P = 3 for M-RoPE, 1 otherwise)."""

    @property
    @abstractmethod
    def video_token_id(self) -> int:
        """The placeholder token id of a video embedding."""

    # ---- prompt -----------------------------------------------------------------------------

    def build_prompt(self, frames: np.ndarray, prompt: str, fps: float = 2.0) -> VideoPrompt:
        """Preprocess frames and tokenise the chat prompt around them."""
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise InvalidRequestError(f"frames must be uint8 [T,H,W,3], got {frames.dtype} {frames.shape}")
        vision_inputs, grid, num_placeholders = self._vision_inputs(frames, fps)
        text = self._prompt_text(prompt, num_placeholders)
        input_ids = torch.tensor(self.tokenizer(text)["input_ids"], dtype=torch.long)
        placeholders = torch.nonzero(input_ids == self.video_token_id).flatten()
        if placeholders.numel() != num_placeholders:
            raise InvalidRequestError("the prompt must not contain video placeholder tokens itself")
        grid_size = grid[0] * grid[1] * grid[2]
        return VideoPrompt(input_ids, placeholders[:grid_size], grid, vision_inputs)

    def context_length(self, prompt: str, num_frames: int, width: int, height: int) -> int:
        """Tokens the prefill of `prompt` over such a video puts in the context, computed without
        the video: what the request checks use before any download."""
        width, height = self.frame_size(width, height)
        text_tokens = len(self.tokenizer(self._prompt_text(prompt, 1))["input_ids"]) - 1
        return text_tokens + self.video_placeholders(num_frames, width, height)

    def text_after_video(self, prompt: str) -> list[int]:
        """Token ids a single-question prompt holds after its last video placeholder: the
        question and the assistant header (the lab packs questions that share the video)."""
        ids = self.tokenizer(self._prompt_text(prompt, 1))["input_ids"]
        return ids[ids.index(self.video_token_id) + 1 :]

    # ---- decoding ---------------------------------------------------------------------------

    def video_features(self, prompt: VideoPrompt) -> torch.Tensor:
        """Projected embeddings of the video token grid in (t, h, w) order, with gradients
        (for training the vision tower; decoding uses `video_embeddings`)."""  # [t*h*w, hidden]
        t, h, w = prompt.video_grid
        return self._video_embeddings(prompt.vision_inputs)[: t * h * w]

    @torch.inference_mode()
    def video_embeddings(self, prompt: VideoPrompt) -> torch.Tensor:
        """Projected video embeddings of a prompt, one row per placeholder."""  # [N', hidden]
        return self._video_embeddings(prompt.vision_inputs)

    @torch.inference_mode()
    def encode_video(self, prompt: VideoPrompt) -> tuple[torch.Tensor, TowerFeatures]:
        """Projected video embeddings [N', hidden] and the tower's output they came from, for a
        draft that shares this model's vision tower (`models/vision_share.py`)."""
        embeddings, tower_output = self._encode_video(prompt.vision_inputs)
        return embeddings, TowerFeatures(tower_output, self.tower_fingerprint)

    @torch.inference_mode()
    def project_features(self, features: TowerFeatures, prompt: VideoPrompt) -> torch.Tensor:
        """This model's video embeddings from another model's tower output [N', hidden]; the
        towers must be the same (`tower_fingerprint`)."""
        if features.fingerprint != self.tower_fingerprint:
            raise ValueError(f"{self.name}: the vision features come from another vision tower")
        return self._project(features.features.to(self.device), prompt.vision_inputs)

    @functools.cached_property
    def tower_fingerprint(self) -> str:
        """A digest of the vision tower's weights: equal for two models only if their towers are."""
        return tower_fingerprint(self._tower())

    @torch.inference_mode()
    def prefill(
        self,
        prompt: VideoPrompt,
        keep_video: Optional[torch.Tensor] = None,
        video_embeddings: Optional[torch.Tensor] = None,
        positions: PositionLayout = "original",
        reserve: int = 0,
    ) -> tuple[DecodeState, torch.Tensor]:
        """Run the prompt into a fresh cache; return the state and the last position's logits.

        `reserve` rows are set aside for tokens to come (the slot grows if they run out).

        `keep_video` (indices into `prompt.video_index`) keeps only those video tokens in the
        language context. With `positions="original"` they keep their original positions and
        the text after the video continues at its original offsets; `"compact"` renumbers the
        pruned sequence 0, 1, 2, ... on every axis, as if the dropped tokens never existed.
        """
        state, logits, _ = self._prefill(prompt, keep_video, video_embeddings, positions, False, reserve)
        return state, logits

    @torch.inference_mode()
    def prefill_scored(
        self, prompt: VideoPrompt, video_embeddings: Optional[torch.Tensor] = None, reserve: int = 0
    ) -> tuple[DecodeState, torch.Tensor, torch.Tensor]:
        """`prefill`, plus one score per grid video token (SpecVLM stage I).

        The prompt is prefilled in two parts: up to the last video placeholder, then the text
        after it with eager attention, whose probabilities onto the video keys are averaged over
        heads and queries as each layer runs, and over layers at the end. Only [heads, text, L]
        probabilities of one layer exist at a time, never an L x L map.
        """  # scores: [N]
        return self._prefill(prompt, None, video_embeddings, "original", True, reserve)

    def _prefill(self, prompt, keep_video, video_embeddings, positions, score_video: bool, reserve: int):
        self._check_context(len(prompt))
        rows, layout = self.context_layout(prompt, keep_video, positions)
        embeds = self._prompt_embeddings(prompt, video_embeddings)[rows]  # [L', hidden]
        next_position = int(layout.max()) + 1
        # Scores need the text after the video as a forward of its own (eager, hooked); without
        # them one forward reads the weights once instead of twice.
        split = self._after_last_video(prompt.input_ids[rows]) if score_video else 0
        cache = DynamicCache(config=self.model.config.get_text_config())
        if split:
            head = slice(0, split)
            self._forward(inputs_embeds=embeds[None, head], positions=layout[:, head], cache=cache, keep=1)
        recorded = VideoAttention(prompt.video_index if score_video else None)
        with recording(self.model.model.language_model, recorded, self._forward_lock):
            logits = self._forward(
                inputs_embeds=embeds[None, split:], positions=layout[:, split:], cache=cache, keep=1
            )
        scores = recorded.mean() if score_video else None
        length = int(rows.numel())
        slot = self.decoder.new_slot(length + reserve)
        for i, layer in enumerate(cache.layers):
            slot.write(i, layer.keys[0], layer.values[0])
        return DecodeState(slot, length, next_position - length, length), logits[-1], scores

    def _after_last_video(self, input_ids: torch.Tensor) -> int:
        """The row after the last video placeholder (at most the last row), 0 without video."""
        is_video = input_ids == self.video_token_id
        return min(int(is_video.nonzero().max()) + 1 if is_video.any() else 0, len(input_ids) - 1)

    def context_layout(
        self,
        prompt: VideoPrompt,
        keep_video: Optional[torch.Tensor] = None,
        positions: PositionLayout = "original",
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The prompt rows a prefill puts in the language context, and their positions.

        Returns (rows [L'], positions [P, L']); P = 3 for M-RoPE, 1 otherwise.
        """
        rows = self._kept_rows(prompt, keep_video)
        if positions == "compact":
            return rows, torch.arange(len(rows), dtype=torch.long).expand(self._position_rows, len(rows))
        return rows, self.prompt_positions(prompt)[:, rows]

    def decode(self, token_ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(token_ids), skip_special_tokens=True)

    # ---- helpers ----------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @property
    def vocab_size(self) -> int:
        return int(self.model.get_output_embeddings().weight.shape[0])

    @property
    def kv_bytes_per_token(self) -> int:
        """KV-cache bytes one context token costs: keys and values of every layer."""
        text = self.model.config.get_text_config()
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
        return 2 * text.num_hidden_layers * text.num_key_value_heads * head_dim * self.dtype.itemsize

    @functools.cached_property
    def max_positions(self) -> int:  # read once: a config lookup costs more than a draft step's checks
        return int(self.model.config.get_text_config().max_position_embeddings)

    _position_rows: int = 1

    def _eos_ids(self) -> set[int]:
        ids = {self.tokenizer.eos_token_id}
        ids.add(self.tokenizer.convert_tokens_to_ids("<|endoftext|>"))
        generation_eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        if isinstance(generation_eos, int):
            ids.add(generation_eos)
        elif generation_eos:
            ids.update(generation_eos)
        return {i for i in ids if isinstance(i, int) and 0 <= i < len(self.tokenizer)}

    def _prompt_embeddings(self, prompt: VideoPrompt, video_embeddings: Optional[torch.Tensor]):
        ids = prompt.input_ids.to(self.device)
        embeds = self.model.get_input_embeddings()(ids)
        video = self._video_embeddings(prompt.vision_inputs) if video_embeddings is None else video_embeddings
        mask = ids == self.video_token_id
        embeds[mask] = video.to(embeds.dtype)
        return embeds

    def _kept_rows(self, prompt: VideoPrompt, keep_video: Optional[torch.Tensor]) -> torch.Tensor:
        """Prompt rows that enter the language context: all of them, or all but pruned video."""
        rows = torch.arange(len(prompt))
        if keep_video is None:
            return rows
        keep_video = torch.as_tensor(keep_video, dtype=torch.long)
        if keep_video.numel() and (keep_video.min() < 0 or keep_video.max() >= prompt.num_video_tokens):
            raise ValueError("keep_video indexes outside the video tokens")
        dropped = torch.ones(prompt.num_video_tokens, dtype=torch.bool)
        dropped[keep_video] = False
        mask = torch.ones(len(prompt), dtype=torch.bool)
        mask[prompt.video_index[dropped]] = False
        return rows[mask]

    def _forward(self, *, positions: torch.Tensor, cache: DynamicCache, keep: int, **inputs) -> torch.Tensor:
        with self._forward_lock:
            out = self.model(
                **inputs,
                position_ids=self._format_positions(positions.to(self.device)),
                cache=cache,
                use_cache=True,
                logits_to_keep=keep,
            )
        return out.logits[0].float()  # [keep, vocab]

    def _format_positions(self, positions: torch.Tensor) -> torch.Tensor:
        """[P, n] positions -> the shape the family's forward expects."""
        return positions[0][None]  # [1, n]
