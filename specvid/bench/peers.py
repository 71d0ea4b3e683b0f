"""Peer rows of `specvid bench`: what a user would run instead, on the same target and inputs.

`hf` is transformers' own greedy `generate` on the target, fed the very prompt tokens and pixel
tensors the target worker builds (so its tokens can be compared with `ar`'s one for one), and
timed the way every other row is: prefill up to the first generated token, decode after it.
Tokens arrive through a streamer, so the decode clock starts at the first new token exactly as
`SpecStats.decode_s` does.
"""

from __future__ import annotations

import time

import torch
from transformers.generation.streamers import BaseStreamer

from specvid.decoding.stats import SpecStats
from specvid.models.adapter import VideoLLM
from specvid.pipeline import sampled_fps
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


def hf_generate(model: VideoLLM, video: DecodedVideo, prompt: str, max_tokens: int) -> tuple[list[int], SpecStats]:
    """transformers' greedy `generate` on `model`: the tokens before the first stop token, and the
    stats the other rows report (prefill to the first token, decode after it)."""
    started = time.perf_counter()
    built = model.build_prompt(video.frames, prompt, sampled_fps(video))
    ids = built.input_ids[None].to(model.device)
    inputs = {k: v.to(model.device) for k, v in built.vision_inputs.items()}
    if model.family == "qwen2_5_vl":
        # Without token types transformers silently skips 3-D M-RoPE (2 marks video tokens).
        inputs["mm_token_type_ids"] = (ids == model.video_token_id).long() * 2
    clock = _TokenClock()
    with torch.inference_mode():
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
    return tokens, stats
