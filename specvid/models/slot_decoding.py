"""Decode-time operations of a `VideoLLM` over a sequence's static cache slot.

After the prefill, every call of a session goes through here: a block of tokens extends the
cache (`extend`, `extend_many` for several sequences in one forward), a draft's whole proposal
runs in one call (`draft`), and a rejection crops the cache back (`crop`). Each runs the
project's decode forward (`decoder.py`), eager or compiled, under the adapter's forward lock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from specvid.errors import TooLargeError
from specvid.models.attention import VideoAttention
from specvid.models.decoder import CacheSlot


@dataclass
class DecodeState:
    """One sequence's KV cache and where its next position lies.

    `length` counts the valid rows of the slot. The position of row i is `i + position_offset`
    (all three M-RoPE axes agree for text tokens), so a crop never needs positions recomputed.
    """

    slot: CacheSlot
    length: int
    position_offset: int
    prompt_length: int


class SlotDecoding:
    """Mixed into `VideoLLM`, which provides `decoder`, `device`, `max_positions` and the
    `_forward_lock` every forward holds."""

    @torch.inference_mode()
    def extend(
        self, state: DecodeState, token_ids: Sequence[int], recorded: Optional[VideoAttention] = None
    ) -> torch.Tensor:
        """Append tokens to the cache; return the logits after each of them."""  # [n, vocab]
        n = len(token_ids)
        self.make_room(state, n)
        ids, positions, start = self._block_inputs(state, token_ids)
        with self._forward_lock:
            logits = self.decoder(ids, positions, start, state.slot, recorded)
        state.length += n
        return logits

    @torch.inference_mode()
    def extend_many(self, states: Sequence[DecodeState], blocks: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        """`extend` of several sequences in one forward (each checked by `make_room` first)."""
        if len(states) == 1:
            return [self.extend(states[0], blocks[0])]
        n = max(len(block) for block in blocks)
        for state in states:
            self._fit(state, n)  # blocks are padded to the longest with token 0
        device = self.device
        ids = torch.tensor([list(b) + [0] * (n - len(b)) for b in blocks], dtype=torch.long, device=device)
        starts = torch.tensor([state.length for state in states], device=device)  # [B]
        offsets = torch.tensor([state.position_offset for state in states], device=device)
        positions = (starts + offsets)[:, None] + torch.arange(n, device=device)  # [B, n]
        with self._forward_lock:
            logits = self.decoder.forward_batch(ids, positions, starts, tuple(s.slot for s in states))
        for state, block in zip(states, blocks):
            state.length += len(block)
        return [logits[j, : len(block)] for j, block in enumerate(blocks)]

    @torch.inference_mode()
    def draft(
        self, state: DecodeState, block: Sequence[int], k: int, sampling: Optional[tuple[torch.Tensor, ...]] = None
    ) -> tuple[list[int], torch.Tensor, Optional[torch.Tensor]]:
        """k tokens drafted after `block` in one call of the decode forward's draft loop
        (`TextDecoder.draft`: tokens, the probability each was chosen with [k], distributions).
        The cache then holds `block` and the first k - 1 tokens."""
        n = len(block)
        self.make_room(state, n + k - 1)
        ids, positions, start = self._block_inputs(state, block)
        with self._forward_lock:
            tokens, chosen, distributions = self.decoder.draft(ids, positions, start, state.slot, k, sampling)
        state.length += n + k - 1
        return tokens.tolist(), chosen.cpu(), None if distributions is None else distributions.cpu()

    def _block_inputs(self, state: DecodeState, block: Sequence[int]) -> tuple[torch.Tensor, ...]:
        """A block's token ids [n], rotary positions [n] and first cache row [] after `state`."""
        device = self.device
        ids = torch.tensor(list(block), dtype=torch.long, device=device)
        positions = torch.arange(state.length, state.length + len(block), device=device) + state.position_offset
        return ids, positions, torch.tensor(state.length, device=device)

    def make_room(self, state: DecodeState, n: int) -> None:
        """Check that n more tokens fit the model's context, and grow the slot if they need it."""
        if n == 0:
            raise ValueError("extend needs at least one token")
        self._check_context(state.length + state.position_offset + n)
        self._fit(state, n)

    def _fit(self, state: DecodeState, n: int) -> None:
        if state.length + n > state.slot.max_len:
            state.slot = self.decoder.grown(state.slot, state.length + n, state.length)

    @torch.inference_mode()
    def extend_with_video_mass(
        self, state: DecodeState, token_ids: Sequence[int], video_keys: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`extend`, plus each new token's attention mass on the video keys (LVSpec relevance).

        `video_keys` are cache positions (the prompt's video placeholders, for an unpruned
        prefill). Returns (logits [n, vocab], mass [n]): mass i is the share of attention the
        query at token i puts on the video, averaged over heads and layers.
        """
        recorded = VideoAttention(video_keys, per_query=True)
        logits = self.extend(state, token_ids, recorded)
        return logits, recorded.mean()

    def crop(self, state: DecodeState, length: int) -> None:
        """Forget cache entries past `length` (rejected draft tokens): the rows stay in the slot,
        masked, until new tokens overwrite them."""
        if length < state.prompt_length:
            raise ValueError(f"cannot crop into the prompt ({length} < {state.prompt_length})")
        state.length = min(state.length, length)

    def _check_context(self, positions_needed: int) -> None:
        if positions_needed > self.max_positions:
            raise TooLargeError(
                f"context of {positions_needed} positions exceeds the model's {self.max_positions}"
            )
