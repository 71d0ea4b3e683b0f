"""What draft and target workers keep per request, and the messages that cross to them.

A worker holds one `Session` per request: its KV cache, the committed tokens it has been told
about, and which generated tokens its cache already holds. Commit info rides on the next call
(`Commit`), so a rejection costs no extra round trip: on each call the worker crops its cache
to the longest prefix that agrees with the committed tokens and feeds the rest.

Only token ids (and, when sampling, draft probabilities) cross a process boundary.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from specvid.config import SamplingParams
from specvid.decoding.sampling import make_generator
from specvid.errors import SessionLostError
from specvid.models.adapter import DecodeState, PositionLayout, VideoLLM, VideoPrompt
from specvid.models.vision_share import TowerFeatures


@dataclass(frozen=True)
class LooseVerification:
    """LVSpec's knobs, as the target worker applies them (see `DecodingConfig` for each)."""

    lam: float
    top_n: int
    shift_window: int
    shift_top_k: int
    relevance: str  # "embedding" | "attention" | "random"
    filler_ratio: float = 0.0

    @classmethod
    def of(cls, spec) -> Optional["LooseVerification"]:
        """The loose rule a `DecodingConfig` asks for, or None for exact verification."""
        if not spec.loose:
            return None
        return cls(spec.lam, spec.top_n, spec.shift_window, spec.shift_top_k, spec.relevance,
                   spec.filler_ratio)


@dataclass(frozen=True)
class PrefillRequest:
    """Everything a worker needs to open a session."""

    request_id: str
    frames: np.ndarray  # [T, H, W, 3] uint8, already at the target's frame size
    fps: float
    prompt: str
    sampling: SamplingParams
    score_video: bool = False  # the target returns a score per video token (SpecVLM)
    loose: Optional[LooseVerification] = None  # the target verifies loosely (LVSpec)
    draft_confidence: float = 0.0  # the draft stops a round after a token less likely than this
    share_vision: bool = False  # the target hands its vision tower's output to the draft (same tower)

    @property
    def reserved_rows(self) -> int:
        """Cache rows a session sets aside past its prompt: the tokens it may generate, plus one."""
        return self.sampling.max_tokens + 1


@dataclass(frozen=True)
class VideoKeep:
    """The video tokens a pruned draft keeps in its language context."""

    indices: torch.Tensor  # [kept] sorted indices into the target's grid tokens
    of: int  # the target's grid size; the draft's grid must be the same
    positions: PositionLayout = "original"


@dataclass(frozen=True)
class Commit:
    """Tokens committed since the worker last heard: `tokens` extend the first `base` ones.

    `assumed` tokens follow the committed ones for this call only: a draft asked to draft ahead
    while the target still verifies its last proposal takes that proposal as accepted, without
    committing it (`decoding/ahead.py`, draft-ahead rounds).
    """

    base: int
    tokens: tuple[int, ...]
    assumed: tuple[int, ...] = ()


@dataclass(frozen=True)
class Proposal:
    """A draft's guess for one round."""

    tokens: tuple[int, ...]  # [k]
    probs: Optional[torch.Tensor] = None  # [k, vocab]; only when sampling
    compute_s: float = 0.0  # the draft's forward time for the batch that drafted it
    batch: tuple[int, int] = (0, 0)  # that batch's (requests, most draft steps)

    def after(self, first: int) -> "Proposal":
        """The proposal without its first `first` tokens."""
        probs = None if self.probs is None else self.probs[first:]
        return dataclasses.replace(self, tokens=self.tokens[first:], probs=probs)

    @staticmethod
    def empty() -> "Proposal":
        return Proposal(())


@dataclass(frozen=True)
class PrefillResult:
    """The target's answer to a prefill."""

    first_token: int
    stop_token_ids: frozenset[int]
    prompt_tokens: int
    video_tokens: int
    video_scores: Optional[torch.Tensor] = None  # [video_tokens]; when the request asked for them
    tower_features: Optional[TowerFeatures] = None  # when the request shares the vision tower


@dataclass
class Session:
    state: DecodeState
    prompt: VideoPrompt
    sampling: SamplingParams
    generator: torch.Generator
    committed: list[int] = field(default_factory=list)  # generated tokens, as committed
    cached: list[int] = field(default_factory=list)  # generated tokens whose KV is cached
    loose: Optional[object] = None  # the target's per-request LVSpec state (`decoding/target.py`)
    draft_confidence: float = 0.0  # a draft session's adaptive-length threshold
    # (committed count, tokens the target verified after them: accepted + next), told to a draft
    # drafting ahead: its round stops once its path leaves them. Set from another thread, read
    # between draft steps.
    settled: Optional[tuple[int, tuple[int, ...]]] = None


class SessionStore:
    """A bounded LRU of sessions; the oldest is evicted when full (its owner re-prefills)."""

    def __init__(self, max_sessions: int = 64):
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, request_id: str, session: Session) -> None:
        with self._lock:
            self._sessions[request_id] = session
            self._sessions.move_to_end(request_id)
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)

    def get(self, request_id: str) -> Session:
        with self._lock:
            session = self._sessions.get(request_id)
            if session is None:
                raise SessionLostError(f"no session for request {request_id!r}")
            self._sessions.move_to_end(request_id)
            return session

    def pop(self, request_id: str) -> None:
        with self._lock:
            self._sessions.pop(request_id, None)

    def __len__(self) -> int:
        return len(self._sessions)


class Worker:
    """Shared session handling of the draft and target workers."""

    salt = 0  # separates the random streams of draft and target for one seed

    def __init__(self, model: VideoLLM, max_sessions: int = 64):
        self.model = model
        self.sessions = SessionStore(max_sessions)

    def release(self, request_id: str) -> None:
        self.sessions.pop(request_id)

    def _prompt(self, request: PrefillRequest) -> VideoPrompt:
        return self.model.build_prompt(request.frames, request.prompt, request.fps)

    def _open(self, request: PrefillRequest, prompt: VideoPrompt, state: DecodeState) -> Session:
        session = Session(state, prompt, request.sampling, make_generator(request.sampling.seed, self.salt))
        self.sessions.put(request.request_id, session)
        return session

    def _sync(self, session: Session, commit: Commit) -> list[int]:
        """Apply commit info; crop the cache to what agrees with it (and with the assumed
        tokens); return tokens to feed."""
        if commit.base != len(session.committed):
            raise SessionLostError(
                f"commit base {commit.base} does not match the {len(session.committed)} tokens held"
            )
        session.committed.extend(commit.tokens)
        path = session.committed + list(commit.assumed)
        # Feed at least the path's last token, even when the cache holds it: its logits are the
        # call's answer (a round drafting ahead that met a verdict before it began, drafted again).
        agree = min(_common_prefix(session.cached, path), max(len(path) - 1, 0))
        self.model.crop(session.state, session.state.prompt_length + agree)
        del session.cached[agree:]
        return path[agree:]

    def _feed_many(self, sessions: list[Session], blocks: list[list[int]]) -> list[torch.Tensor]:
        """Extend each session's cache by its block, all in one forward; return their logits."""
        logits = self.model.extend_many([session.state for session in sessions], blocks)
        for session, block in zip(sessions, blocks):
            session.cached.extend(block)
        return logits  # per session [len(block), vocab]


def stamped(results: list, compute_s: float, batch: tuple[int, int]) -> list:
    """A batched call's answers, each stamped with the batch's compute time and shape (requests,
    width), errors as they are."""
    return [r if isinstance(r, BaseException) else dataclasses.replace(r, compute_s=compute_s, batch=batch)
            for r in results]


def returned(result):
    """A batched call's entry for one request: its result, or its error raised."""
    if isinstance(result, BaseException):
        raise result
    return result


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n
