"""Peer rows of `specvid bench`: what a user would run instead, on the same target and inputs.

`hf` is transformers' own greedy `generate` on the target, fed the very prompt tokens and pixel
tensors the target worker builds (so its tokens can be compared with `ar`'s one for one), and
timed the way every other row is: prefill up to the first generated token, decode after it.
Tokens arrive through a streamer, so the decode clock starts at the first new token exactly as
`SpecStats.decode_s` does.

`hf-compiled` is the same call on transformers' documented fast path: a static cache
(`cache_implementation="static"`) and the model's forward under `torch.compile`; the compiled
forward is kept per model, so compilation and its warm-up fall in the harness's untimed
warm-up run, as the engine's do. Where transformers refuses that path for a family, the row
fails with that reason (`PeerUnavailableError`) and the report says so.

`hf-assisted` is the same call with our draft as `assistant_model` (transformers' assisted
generation), k draft tokens per round, fixed (no confidence stop). transformers (5.24) gives the
assistant the prompt's token ids, video placeholders included, but not the pixel tensors: the
assistant's vision tower never runs (counted: 0 calls over a whole generation), so it drafts with
placeholder embeddings where the video should be, blind. transformers reports no acceptance
figures, so rounds are counted as the target's forwards after the prefill, each of which
verifies one block.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator, Optional

import torch
from transformers.generation.streamers import BaseStreamer

from specvid.decoding.stats import SpecStats
from specvid.models.adapter import VideoLLM
from specvid.models.decoder import row_major_linears
from specvid.request_path import sampled_fps
from specvid.video import DecodedVideo


class _TokenClock(BaseStreamer):
    """When each generated token arrived (the first `put` is the prompt itself)."""

    def __init__(self):
        self.seen_prompt = False
        self.times: list[float] = []

    def put(self, value) -> None:
        if not self.seen_prompt:
            self.seen_prompt = True
            return
        self.times.extend([time.perf_counter()] * value.numel())

    def end(self) -> None:
        pass


class PeerUnavailableError(RuntimeError):
    """transformers refuses a peer's settings for this model (the report names the reason)."""


_COMPILED_FORWARDS: dict[int, object] = {}  # id(model) -> its forward under torch.compile


def hf_generate(
    model: VideoLLM,
    video: DecodedVideo,
    prompt: str,
    max_tokens: int,
    assistant: Optional[VideoLLM] = None,
    num_draft_tokens: int = 5,
    compiled: bool = False,
) -> tuple[list[int], SpecStats]:
    """transformers' greedy `generate` on `model` (assisted by `assistant` if given): the tokens
    before the first stop token, and the stats the other rows report (prefill to the first token,
    decode after it; rounds and accepted drafts when assisted).

    The weights are laid out as transformers loads them for the call (the engine stores them
    column-major on CPU, `models/decoder.py`), re-laid untimed before and after.
    """
    with row_major_linears(model.model), row_major_linears(assistant.model if assistant else torch.nn.Module()):
        if not compiled:
            return _generate(model, video, prompt, max_tokens, assistant, num_draft_tokens)
        with _compiled_forward(model.model):
            try:
                return _generate(model, video, prompt, max_tokens, None, num_draft_tokens, static_cache=True)
            except Exception as e:  # transformers refuses or fails the static/compiled path here
                raise PeerUnavailableError(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e


@contextmanager
def _compiled_forward(module: torch.nn.Module) -> Iterator[None]:
    """`module.forward` under `torch.compile` while open, as transformers' docs set it up; the
    compiled forward is reused by later calls on the same model."""
    if id(module) not in _COMPILED_FORWARDS:
        _COMPILED_FORWARDS[id(module)] = torch.compile(module.forward)
    module.forward = _COMPILED_FORWARDS[id(module)]
    try:
        yield
    finally:
        del module.forward  # the class's own forward again


def _generate(model, video, prompt, max_tokens, assistant, num_draft_tokens,
              static_cache: bool = False) -> tuple[list[int], SpecStats]:
    started = time.perf_counter()
    built = model.build_prompt(video.frames, prompt, sampled_fps(video))
    ids = built.input_ids[None].to(model.device)
    inputs = {k: v.to(model.device) for k, v in built.vision_inputs.items()}
    if model.family == "qwen2_5_vl":
        # Without token types transformers silently skips 3-D M-RoPE (2 marks video tokens).
        inputs["mm_token_type_ids"] = (ids == model.video_token_id).long() * 2
    if assistant is not None:
        inputs.update(assistant_model=assistant.model, num_assistant_tokens=num_draft_tokens,
                      num_assistant_tokens_schedule="constant", assistant_confidence_threshold=0.0)
    if static_cache:
        inputs["cache_implementation"] = "static"
    clock = _TokenClock()
    forwards = _ForwardCounter(model.model)
    with torch.inference_mode(), forwards:
        out = model.model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), **inputs, max_new_tokens=max_tokens,
            do_sample=False, streamer=clock,
        )
    new = out[0, ids.shape[1] :].tolist()
    stop = next((i for i, token in enumerate(new) if token in model.eos_token_ids), len(new))
    tokens, times = new[:stop], clock.times[: max(stop, 1)]
    stats = SpecStats(emitted=len(tokens), prompt_tokens=len(built), video_tokens=built.num_video_tokens)
    stats.prefill_s = times[0] - started
    stats.decode_s = times[-1] - times[0]
    if assistant is not None:
        # Every target forward after the prefill verified a block and emitted accepted + 1 tokens.
        stats.rounds = max(forwards.count - 1, 0)
        stats.accepted = max(len(new) - 1 - stats.rounds, 0)
        stats.drafted = stats.rounds * num_draft_tokens
    return tokens, stats


class _ForwardCounter:
    """Counts a module's forward calls while the context is open."""

    def __init__(self, module: torch.nn.Module):
        self.module, self.count, self._handle = module, 0, None

    def __enter__(self):
        self._handle = self.module.register_forward_pre_hook(self._seen)
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()

    def _seen(self, module, args) -> None:
        self.count += 1
