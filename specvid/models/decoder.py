"""The decode-time forward of a Video-LLM's language model, over a static KV cache.

After the prefill both families are the same machine: a Qwen2 decoder stack over text tokens
whose M-RoPE axes all agree (Qwen2.5-VL) or whose positions are 1-D (LLaVA-OneVision). So one
forward, written here, serves decode steps and verify blocks of both. It calls the
transformers model's own modules (a DeepSpeed-sharded projection still all-reduces) and keeps
keys and values in a `CacheSlot` that is written in place and never changes shape while a
sequence decodes. Hence:

- a rejected draft costs nothing: crop only moves the length back; stale rows past it are
  masked, then overwritten;
- the forward compiles (`torch.compile`) into two graphs, the one-token step and any longer
  block, with no transformers-side Python left per step; the slot length is a dynamic
  dimension, so a request of another length reuses them.

Terms: a *block* is the n new tokens of one call (1 for a decode step, k + 1 for a verify);
`start` is the cache row of its first token; `positions` are their rotary positions.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from specvid.models.attention import VideoAttention
from specvid.models.choice import draw, filtered_probs

log = logging.getLogger(__name__)

# Compiled graphs: two per model, all models of a process sharing one code object. Only the
# dimensions marked dynamic may be; otherwise a second model of other widths would turn every
# weight shape symbolic in the graphs compiled after it.
_DYNAMO = {"automatic_dynamic_shapes": False, "recompile_limit": 64}

# Slots are sized in multiples of this many rows, so a slot rarely needs to grow and the few
# distinct lengths suit shape-keyed kernels (CUDA graphs) as well.
SLOT_ROWS = 128


@dataclass(frozen=True)
class CacheSlot:
    """One sequence's keys and values in every layer, `max_len` rows each."""

    keys: tuple[torch.Tensor, ...]  # per layer [kv_heads, max_len, head_dim]
    values: tuple[torch.Tensor, ...]  # per layer [kv_heads, max_len, head_dim]

    @property
    def max_len(self) -> int:
        return self.keys[0].shape[1]

    def write(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Copy [kv_heads, n, head_dim] keys and values into rows 0..n-1 (after a prefill)."""
        n = keys.shape[1]
        self.keys[layer][:, :n].copy_(keys)
        self.values[layer][:, :n].copy_(values)


def column_major_linears(module: nn.Module) -> int:
    """Store every plain `nn.Linear` weight under `module` transposed in memory; returns how many.

    Same values and shape, only the strides change: `weight` becomes the transpose of a
    contiguous [in, out] tensor. On CPU a one-row matmul (a decode step) streams such a weight
    2-3x faster than the usual [out, in] layout (measured in docs/models.md); prefill gemms do
    not slow down. Sharded projections (not plain `nn.Linear`) are left alone.
    """
    count = 0
    for linear in module.modules():
        if type(linear) is nn.Linear and linear.weight.is_contiguous():
            linear.weight.data = _column_major(linear.weight.data)
            count += 1
    return count


def _column_major(weight: torch.Tensor) -> torch.Tensor:
    """The same [out, in] values, stored as the transpose of a contiguous [in, out] tensor."""
    return weight.t().contiguous().t()


@contextmanager
def row_major_linears(module: nn.Module) -> Iterator[None]:
    """Weights laid out as transformers loads them while open (for peers that are timed as
    users would run them), column-major again after."""
    changed = [linear for linear in module.modules() if type(linear) is nn.Linear and not linear.weight.is_contiguous()]
    for linear in changed:
        linear.weight.data = linear.weight.data.contiguous()
    try:
        yield
    finally:
        for linear in changed:
            linear.weight.data = _column_major(linear.weight.data)


def slot_rows(needed: int) -> int:
    """Rows a slot gets for `needed` ones: rounded up to a multiple of `SLOT_ROWS`."""
    return -(-needed // SLOT_ROWS) * SLOT_ROWS


class TextDecoder(nn.Module):
    """A block of tokens through the language model, attending to a `CacheSlot`."""

    def __init__(self, language_model: nn.Module, lm_head: nn.Module, rotary_axes: int):
        super().__init__()
        self.language_model = language_model
        self.lm_head = lm_head
        self.rotary_axes = rotary_axes  # 3 for M-RoPE: every axis carries the text position
        attention = language_model.layers[0].self_attn
        self.head_dim = int(attention.head_dim)
        self.scaling = float(attention.scaling)
        self._compiled: Optional[nn.Module] = None
        self._compiled_draft: Optional[nn.Module] = None
        self._draft_graphs: set[tuple[int, bool]] = set()  # (k, sampled) compiled at start-up
        # Built once (a patch made per call defines a class each time); it is thread-local.
        self._dynamo_settings = torch._dynamo.config.patch(**_DYNAMO)

    # ---- slots ------------------------------------------------------------------------------

    def new_slot(self, rows: int) -> CacheSlot:
        """A zeroed slot of at least `rows` rows, sized for this (possibly sharded) model.

        Zeroed, not empty: masked rows still enter the attention product with weight 0, and
        0 * NaN from uninitialised memory would not be 0.
        """
        weight = self.lm_head.weight
        rows = slot_rows(rows)
        shapes = [(layer.self_attn.k_proj.weight.shape[0] // self.head_dim, rows, self.head_dim)
                  for layer in self.language_model.layers]
        keys = tuple(torch.zeros(s, dtype=weight.dtype, device=weight.device) for s in shapes)
        values = tuple(torch.zeros(s, dtype=weight.dtype, device=weight.device) for s in shapes)
        for t in keys + values:
            torch._dynamo.mark_dynamic(t, 1)  # one compiled graph for every slot length
        return CacheSlot(keys, values)

    def grown(self, slot: CacheSlot, rows: int, length: int) -> CacheSlot:
        """A slot of at least `rows` rows holding the first `length` rows of `slot`."""
        bigger = self.new_slot(rows)
        for layer in range(len(slot.keys)):
            bigger.write(layer, slot.keys[layer][:, :length], slot.values[layer][:, :length])
        return bigger

    # ---- compilation ------------------------------------------------------------------------

    def compile(self, block: int = 6, draft_loops: Sequence[int] = (), sampled_loops: bool = False) -> float:
        """Compile the forward and warm it up on a 1-token step and on blocks; returns seconds
        (0 if compilation failed: the forward then stays eager, logged as a warning).

        Two graphs result: the decode step (n = 1) and one for any block length n > 1; the
        slot length is dynamic in both, every other shape static. The warm-up runs at start-up,
        so no request pays for it; inductor's on-disk cache (`TORCHINDUCTOR_CACHE_DIR`) makes a
        second start-up much faster. On CUDA the graphs are captured as CUDA graphs (mode
        "reduce-overhead"); on CPU inductor writes its wrapper in C++ (`cpp_wrapper`), which halves
        what a small model's call costs besides its kernels (docs/models.md).

        `draft_loops`: a draft's whole proposal of k tokens (`draft`) compiles into one graph
        per k listed, greedy (and sampled with `sampled_loops`); each costs about as much
        start-up as the forward's two graphs (~50 s on a 2-core CPU, seconds from the cache).
        """
        started = time.perf_counter()
        device = self.lm_head.weight.device
        self._compiled = torch.compile(self.eager_forward, fullgraph=True, **_compile_settings(device))
        self._compiled_draft = torch.compile(self.draft_steps, fullgraph=True, **_compile_settings(device))
        try:
            with torch.inference_mode():
                slot = self.new_slot(2 * SLOT_ROWS)
                for n in (1, block):
                    ids = torch.zeros(n, dtype=torch.long, device=device)
                    self(ids, torch.arange(n, device=device), torch.tensor(0, device=device), slot)
                for k in draft_loops:
                    for sampling in (None, _warm_sampling(k, device)) if sampled_loops else (None,):
                        self._draft_compiled(ids, torch.arange(block, device=device), torch.tensor(0, device=device),
                                             slot, k, sampling)
                        self._draft_graphs.add((k, sampling is not None))
        except Exception as e:  # e.g. no C++ compiler on the machine: decode eagerly instead
            self._compiled = self._compiled_draft = None
            self._draft_graphs.clear()
            log.warning("could not compile the decode forward (%s: %s); decoding runs eagerly, with the "
                        "same output", type(e).__name__, str(e).splitlines()[0] if str(e) else "")
            return 0.0
        seconds = time.perf_counter() - started
        log.info("compiled the decode forward in %.1f s", seconds)
        return seconds

    @property
    def compiled(self) -> bool:
        return self._compiled is not None

    def has_draft_loop(self, k: int, sampled: bool, block: int) -> bool:
        """Whether `draft` runs this proposal in one call: always when eager; compiled, for
        the k (and mode) compiled at start-up and blocks of 2 tokens or more (one graph per k;
        the callers re-feed a token to widen a 1-token block)."""
        return self._compiled is None or ((k, sampled) in self._draft_graphs and block >= 2)

    # ---- forward ----------------------------------------------------------------------------

    def forward(
        self,
        token_ids: torch.Tensor,  # [n] int64
        positions: torch.Tensor,  # [n] int64 rotary positions
        start: torch.Tensor,  # [] int64 cache row of the first token
        slot: CacheSlot,
        recorded: Optional[VideoAttention] = None,
    ) -> torch.Tensor:
        """Logits after each token of the block [n, vocab], float32.

        With `recorded`, each token's attention probabilities onto the video rows are counted
        too (LVSpec's attention relevance); that forward always runs eagerly.
        """
        token_ids, positions, starts = token_ids[None], positions[None], start[None]  # a batch of one
        if self._compiled is None or recorded is not None:
            return self.eager_forward(token_ids, positions, starts, (slot,), recorded)[0]
        return self._call_compiled(token_ids, positions, starts, (slot,))[0]

    def forward_batch(
        self,
        token_ids: torch.Tensor,  # [B, n] int64, blocks padded to one length
        positions: torch.Tensor,  # [B, n] int64
        starts: torch.Tensor,  # [B] int64 cache row of each block's first token
        slots: tuple[CacheSlot, ...],  # [B]
    ) -> torch.Tensor:
        """Logits after each token of B blocks of B sequences [B, n, vocab], in one forward.

        Every projection runs once over all B * n tokens, which on a memory-bound step costs
        little more than one block does; attention runs per sequence, each over its own slot.
        A padded token writes its row past its sequence's valid length, where the next block
        overwrites it, and no real token of the block sees it (it comes after them).

        A batch of one takes the compiled graph; larger ones run eagerly. Compiled, the loop
        over slots unrolls into a graph per batch size that takes 15-50 s to build on a 2-core
        CPU (docs/serving.md), so batches stay eager until a fused per-sequence attention
        (one kernel over every slot) replaces the loop.
        """
        if len(slots) == 1:
            return self(token_ids[0], positions[0], starts[0], slots[0])[None]
        return self.eager_forward(token_ids, positions, starts, slots)

    def draft(
        self,
        token_ids: torch.Tensor,  # [n] int64: the block fed first
        positions: torch.Tensor,  # [n] int64
        start: torch.Tensor,  # [] int64
        slot: CacheSlot,
        k: int,
        sampling: Optional[tuple[torch.Tensor, ...]] = None,  # (temperature, top_k, top_p, uniforms [k])
    ) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """k draft tokens after a block, in one call (one compiled graph per k; a CUDA graph on
        GPU): the block, then each chosen token but the last, are written to the slot.

        Returns the tokens [k], the probability each had where it was chosen [k] (greedy: the
        softmax of the logits; sampled: in the distribution drawn from), and with `sampling`
        those distributions [k, vocab]. A draft that ends its round early (EOS, an unsure
        token) cuts the tokens afterwards; the rows written past its end are never valid.
        """
        if self._compiled is None:
            return self.draft_steps(token_ids[None], positions[None], start[None], (slot,), k, sampling)
        if not self.has_draft_loop(k, sampling is not None, token_ids.shape[0]):
            raise ValueError(f"no compiled draft loop for k={k} ({'sampled' if sampling else 'greedy'}) and a "
                             f"block of {token_ids.shape[0]}: check has_draft_loop first")
        return self._draft_compiled(token_ids, positions, start, slot, k, sampling)

    def _draft_compiled(self, token_ids, positions, start, slot, k, sampling):
        args = (token_ids[None], positions[None], start[None], (slot,), k, sampling)
        torch._dynamo.mark_dynamic(args[0], 1)  # one graph per k for every block length of 2+
        torch._dynamo.mark_dynamic(args[1], 1)
        with self._dynamo_settings:
            return self._compiled_draft(*args)

    def draft_steps(self, token_ids, positions, starts, slots, k: int, sampling=None):
        """`draft` without compilation: [1, n] block -> k tokens, as the compiled graph runs it."""
        tokens, chosen, distributions = [], [], []
        for step in range(k):
            logits = self.eager_forward(token_ids, positions, starts, slots)[0, -1]  # [vocab]
            if sampling is None:
                token = logits.argmax()
                chosen.append(logits.softmax(-1).max())  # the argmax's own probability
            else:
                temperature, top_k, top_p, uniforms = sampling
                distribution = filtered_probs(logits[None], temperature, top_k, top_p)[0]
                token = draw(distribution, uniforms[step])
                chosen.append(distribution.gather(0, token.view(1))[0])
                distributions.append(distribution)
            tokens.append(token)
            # The next step feeds this token, one row after the block.
            starts, positions, token_ids = starts + token_ids.shape[1], positions[:, -1:] + 1, token.view(1, 1)
        return torch.stack(tokens), torch.stack(chosen), torch.stack(distributions) if distributions else None

    def _call_compiled(self, token_ids, positions, starts, slots) -> torch.Tensor:
        if token_ids.shape[1] > 1:
            torch._dynamo.mark_dynamic(token_ids, 1)  # one graph for every verify block length
            torch._dynamo.mark_dynamic(positions, 1)
        with self._dynamo_settings:
            return self._compiled(token_ids, positions, starts, slots)

    def eager_forward(self, token_ids, positions, starts, slots: tuple[CacheSlot, ...], recorded=None) -> torch.Tensor:
        """`forward_batch` without compilation: [B, n] blocks -> [B, n, vocab] logits."""
        n = token_ids.shape[1]
        rows = starts[:, None] + torch.arange(n, device=token_ids.device)  # [B, n] cache rows written
        hidden = self.language_model.embed_tokens(token_ids)  # [B, n, hidden]
        cos, sin = self._rotary(positions, hidden)
        for i, layer in enumerate(self.language_model.layers):
            attended = self._attention(layer.self_attn, layer.input_layernorm(hidden), cos, sin, rows,
                                       [(slot.keys[i], slot.values[i]) for slot in slots], recorded)
            hidden = hidden + attended
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
        return self.lm_head(self.language_model.norm(hidden)).float()

    def _rotary(self, positions: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin [B, 1, n, head_dim] of [B, n] text positions, from the model's own rotary module."""
        ids = positions[None].expand(self.rotary_axes, -1, -1) if self.rotary_axes > 1 else positions
        cos, sin = self.language_model.rotary_emb(like, ids)
        return cos[:, None], sin[:, None]

    def _attention(self, attn, x, cos, sin, rows, caches, recorded):
        b, n = x.shape[:2]
        # Head counts come from the weights (static even when n is symbolic; per rank under TP).
        q_heads, kv_heads = attn.q_proj.weight.shape[0] // self.head_dim, caches[0][0].shape[0]
        heads = lambda t, h: t.view(b, n, h, self.head_dim).transpose(1, 2)  # noqa: E731  [B, h, n, d]
        q = _rotate(heads(attn.q_proj(x), q_heads), cos, sin)
        k = _rotate(heads(attn.k_proj(x), kv_heads), cos, sin)
        v = heads(attn.v_proj(x), kv_heads)
        out = torch.stack([self._attend(q[j], k[j], v[j], rows[j], keys, values, recorded)
                           for j, (keys, values) in enumerate(caches)])  # [B, heads, n, d]
        return attn.o_proj(out.transpose(1, 2).reshape(b, n, -1))

    def _attend(self, q, k, v, rows, keys, values, recorded):
        """One sequence's block ([heads, n, d] queries) against its own slot ([kv, L, d])."""
        # The block's keys and values go to their rows first: each query attends to itself.
        keys.index_copy_(1, rows, k)
        values.index_copy_(1, rows, v)
        # A query sees every row up to its own; rows past it hold stale entries or zeros.
        visible = torch.arange(keys.shape[1], device=rows.device)[None] <= rows[:, None]  # [n, L]
        groups = q.shape[0] // keys.shape[0]
        if recorded is None:
            return F.scaled_dot_product_attention(q[None], keys[None], values[None], attn_mask=visible,
                                                  scale=self.scaling, enable_gqa=groups > 1)[0]
        keys, values = keys.repeat_interleave(groups, 0), values.repeat_interleave(groups, 0)
        scores = (q @ keys.transpose(1, 2)) * self.scaling  # [heads, n, L]
        probs = scores.masked_fill(~visible, float("-inf")).softmax(-1)
        recorded.add(probs)
        return probs @ values  # [heads, n, d]


def _compile_settings(device: torch.device) -> dict:
    """CUDA: capture CUDA graphs. CPU: inductor's C++ wrapper instead of its Python one (measured
    on qwen-tiny, 2 cores: a draft step 1.44 -> 0.73 ms, a proposal's token 0.76 -> 0.37 ms, a
    6-token target verify 9.1 -> 8.1 ms; same start-up)."""
    if device.type == "cuda":
        return {"mode": "reduce-overhead"}
    return {"options": {"cpp_wrapper": True}}


def _warm_sampling(k: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Sampling knobs and draws of the shapes a sampled draft loop takes (values do not matter)."""
    knobs = (torch.tensor(1.0), torch.tensor(0), torch.tensor(1.0), torch.rand(k))
    return tuple(t.to(device) for t in knobs)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding of [B, heads, n, d] by cos, sin [B, 1, n, d]: the halves rotate as a pair."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin
