"""Per-request speculative decoding counters and the figures derived from them.

Conventions follow the literature: tau (mean accepted length) counts accepted draft tokens per
round and excludes the bonus/recovered token, so tokens per round = tau + 1. Decode time starts
after prefill; end-to-end time also includes video fetch/decode and prefill.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional


@dataclass
class SpecStats:
    rounds: int = 0
    drafted: int = 0
    accepted: int = 0
    emitted: int = 0
    accepted_per_position: list[int] = field(default_factory=list)
    drafted_per_position: list[int] = field(default_factory=list)
    rounds_by_accepted: list[int] = field(default_factory=list)  # entry i: rounds that accepted i
    rounds_by_draft_length: list[int] = field(default_factory=list)  # entry k: rounds that chose to draft k
    loose_accepts: int = 0  # LVSpec: accepted mismatches at non-strict positions
    shift_rescues: int = 0  # LVSpec: accepted mismatches at strict positions, by the shift rule
    sessions_restored: int = 0
    draft_deferred: bool = False  # the draft's prefill waited for a round that drafts (began under load)
    draftless_rounds: int = 0  # rounds verified without proposals while a lost draft session came back
    ahead_rounds: int = 0  # draft-ahead rounds: proposals drafted ahead during a verify
    ahead_hits: int = 0  # ... of which the next round used (every draft accepted, next token guessed)
    prompt_tokens: int = 0
    video_tokens: int = 0  # in the target's context
    draft_video_tokens: int = 0  # in the draft's context (fewer when pruned)
    draft_context_tokens: int = 0  # the draft's whole prompt context after prefill
    vision_shared: bool = False  # the draft took the target's vision tower output (no second encoding)
    video_s: float = 0.0
    prefill_s: float = 0.0  # target and draft prefill, pruning included
    prune_s: float = 0.0  # choosing the draft's video tokens
    draft_prefill_s: float = 0.0
    decode_s: float = 0.0
    # Forward time of the batches that drafted / verified for this request, during decoding.
    draft_compute_s: float = 0.0
    target_compute_s: float = 0.0
    # Time the decode loop waited for the draft's / target's answers: compute plus the trip.
    draft_wait_s: float = 0.0
    target_wait_s: float = 0.0

    def record_emitted(self, tokens: int, decode_s: float) -> None:
        """Count tokens a round emitted; `decode_s`: decoding time so far (prefill excluded)."""
        self.emitted += tokens
        self.decode_s = decode_s

    def record_round(self, drafted: int, accepted: int, loose: int = 0, rescued: int = 0,
                     chosen: Optional[int] = None) -> None:
        """Count one verify round: `drafted` proposals, of which the first `accepted` kept
        (`loose` of them loosely accepted and `rescued` by the shift rule); `chosen`: the draft
        length the round chose (`drafted` is fewer where the draft stopped early), if known."""
        self.rounds += 1
        chosen = drafted if chosen is None else chosen
        _grow(self.rounds_by_draft_length, chosen + 1)
        self.rounds_by_draft_length[chosen] += 1
        self.drafted += drafted
        self.accepted += accepted
        self.loose_accepts += loose
        self.shift_rescues += rescued
        _grow(self.drafted_per_position, drafted)
        _grow(self.accepted_per_position, accepted)
        for i in range(drafted):
            self.drafted_per_position[i] += 1
        for i in range(accepted):
            self.accepted_per_position[i] += 1
        _grow(self.rounds_by_accepted, accepted + 1)
        self.rounds_by_accepted[accepted] += 1

    @property
    def tau(self) -> float:
        """Mean accepted draft tokens per round (bonus excluded)."""
        return self.accepted / self.rounds if self.rounds else 0.0

    @property
    def mean_draft_length(self) -> float:
        """The k rounds chose on average (0 for plain decoding)."""
        return sum(k * n for k, n in enumerate(self.rounds_by_draft_length)) / self.rounds if self.rounds else 0.0

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0

    @property
    def decode_tokens_per_s(self) -> float:
        """Tokens emitted after prefill per second of decoding."""
        after_first = max(self.emitted - 1, 0)
        return after_first / self.decode_s if self.decode_s > 0 else 0.0

    @property
    def loose_accepts_per_100(self) -> float:
        """Loose accepts per 100 emitted tokens."""
        return 100.0 * self.loose_accepts / self.emitted if self.emitted else 0.0

    @property
    def shift_rescues_per_100(self) -> float:
        """Shift rescues per 100 emitted tokens."""
        return 100.0 * self.shift_rescues / self.emitted if self.emitted else 0.0

    @property
    def pruned_ratio(self) -> float:
        """Share of the video tokens left out of the draft's context."""
        if not self.video_tokens or not self.draft_video_tokens:
            return 0.0
        return 1.0 - self.draft_video_tokens / self.video_tokens

    @property
    def draft_idle_share(self) -> float:
        """Share of the decode time the draft spent not drafting for this request."""
        return _idle(self.draft_compute_s, self.decode_s)

    @property
    def target_idle_share(self) -> float:
        """Share of the decode time the target spent not verifying for this request."""
        return _idle(self.target_compute_s, self.decode_s)

    @property
    def ahead_hit_rate(self) -> float:
        return self.ahead_hits / self.ahead_rounds if self.ahead_rounds else 0.0

    @property
    def total_s(self) -> float:
        return self.video_s + self.prefill_s + self.decode_s

    def to_dict(self) -> dict:
        out = asdict(self)
        out.update(
            tau=self.tau,
            tokens_per_round=self.tau + 1 if self.rounds else 0.0,
            acceptance_rate=self.acceptance_rate,
            mean_draft_length=self.mean_draft_length,
            decode_tokens_per_s=self.decode_tokens_per_s,
            total_s=self.total_s,
            pruned_ratio=self.pruned_ratio,
            loose_accepts_per_100=self.loose_accepts_per_100,
            shift_rescues_per_100=self.shift_rescues_per_100,
            draft_idle_share=self.draft_idle_share,
            target_idle_share=self.target_idle_share,
            ahead_hit_rate=self.ahead_hit_rate,
        )
        return out


def _idle(busy_s: float, wall_s: float) -> float:
    return max(0.0, 1.0 - busy_s / wall_s) if wall_s > 0 else 0.0


def _grow(counts: list[int], length: int) -> None:
    counts.extend([0] * (length - len(counts)))
