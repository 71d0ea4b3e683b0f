"""How many tokens a round drafts: pinned by the request, or chosen for the load.

Speculation trades forward time for tokens. A request alone verifies k + 1 tokens for little
more than a step costs (the forward is mostly fixed cost), so drafting pays. Under load the
batched forward is compute-bound: every verified token costs nearly what a step's does, and the
tokens the target rejects are lost work. The draft length that pays shrinks as the batch grows,
down to k = 0, plain decoding (vLLM's per-batch-size draft lengths and SGLang's adaptive
speculation answer the same way).

`DraftLengths` picks, for a batch of b requests decoding at once, the k in [0, cap] with the
most tokens per second of round:

    goodput(k) = E[tokens | k] / round_s(b, k)
    round_s(b, k) = measured whole, else draft_s(b, k) + verify_s(b, k + 1) + overhead_s
    E[tokens | k] = 1 + sum_{j=1..k} prod_{i<=j} a_i

and drafts only where that beats plain decoding by SPECULATION_MARGIN.

Every term is measured while requests decode, nothing is assumed about the hardware (a batch
size probes the other side, drafting or not, every 32 rounds, so no estimate goes stale):

- a_i, the acceptance of draft position i once the positions before it were accepted, per
  method (`Acceptance`), forgotten slowly so that a draft judged useless is tried again;
- draft_s and verify_s, the seconds of the batched forwards by their shape (`ForwardCosts`):
  rows (requests in the batch) and width (draft steps; tokens per verify block), the low median
  of a shape's last measurements;
- overhead_s, a round's time outside the two forwards (the hops to remote workers, the loop,
  a batch missed), by batch size and by whether the round drafts;
- round_s, whole rounds verdict to verdict, by batch size and k.

Until a shape has been measured its cost is read off a line fitted through the shapes that
have: a verify's seconds against its batch's tokens, a draft step's against its rows. With a
single size measured the line is flat (a wider verify costs the same: the memory-bound case), so
a lone request drafts from its first round and the first batched rounds measure what width
really costs. A round's k never changes its tokens, only how many of them a round
proposes: output stays the target's at every k.
"""

from __future__ import annotations

import contextlib
import statistics
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

# Acceptance counts shrink by this factor every round of the method: about the last few hundred
# rounds count, and a position not measured for a while drifts back to the prior.
ACCEPTANCE_MEMORY = 0.99
PRIOR_TRIED = 2.0  # pseudo-rounds per position at the prior acceptance: optimistic, so an
# unmeasured (or long unmeasured) position is tried, and measured
PRIOR_ACCEPTED = 1.8
COST_MEMORY = 0.8  # weight of a round overhead's previous estimate against a new measurement
RECENT_MEASUREMENTS = 9  # a forward shape's cost is the median of its last measurements
PROBE_EVERY = 32  # rounds of a batch size between two probes of the other side (drafting or not)
STAY_MARGIN = 0.1  # a batch size keeps its k until another promises this much more goodput
# Speculation must promise this much more goodput than plain decoding. Measured here (qwen-tiny,
# 8 clients in process): the rates put k = 5 16 % ahead of k = 0 while plain decoding was 6-15 %
# faster end to end, the draft's prefill and the rounds it slows being outside the rates.
SPECULATION_MARGIN = 0.2
REDECIDE_EVERY = 8  # rounds of a batch size between two decisions of its k


@dataclass
class Acceptance:
    """Running acceptance per draft position: a_i = P(position i accepted | positions < i were)."""

    tried: list[float] = field(default_factory=list)
    accepted: list[float] = field(default_factory=list)

    def record(self, drafted: int, accepted: int) -> None:
        """One round: `drafted` proposals, of which the first `accepted` were kept."""
        self.tried = [t * ACCEPTANCE_MEMORY for t in self.tried]
        self.accepted = [a * ACCEPTANCE_MEMORY for a in self.accepted]
        grow = drafted - len(self.tried)
        if grow > 0:
            self.tried += [0.0] * grow
            self.accepted += [0.0] * grow
        # Positions past the first rejected one were never judged: they tell nothing.
        for i in range(min(drafted, accepted + 1)):
            self.tried[i] += 1.0
            self.accepted[i] += 1.0 if i < accepted else 0.0

    def rate(self, position: int) -> float:
        """a_i for position i (0-based)."""
        tried = self.tried[position] if position < len(self.tried) else 0.0
        accepted = self.accepted[position] if position < len(self.accepted) else 0.0
        return (accepted + PRIOR_ACCEPTED) / (tried + PRIOR_TRIED)

    def expected_tokens(self, k: int) -> float:
        """Tokens a round of k drafts emits on average: the accepted ones plus the target's own."""
        total, reach = 1.0, 1.0
        for i in range(k):
            reach *= self.rate(i)
            total += reach
        return total


class ForwardCosts:
    """Seconds of one kind of batched forward by its shape (rows, width), measured as it runs.

    `steps`: the width counts sequential forwards (a proposal's draft steps), so the cost of an
    unmeasured shape is width x a step's; otherwise the width is tokens of one forward (a verify
    block) and the cost follows the batch's tokens, rows x width."""

    def __init__(self, steps: bool):
        self.steps = steps
        self.seconds: dict[tuple[int, int], float] = {}  # by shape: the (low) median of its recent measurements
        self._recent: dict[tuple[int, int], deque[float]] = {}
        self._line: Optional[Callable[[int], float]] = None  # fitted through `seconds`, until it changes

    def record(self, rows: int, width: int, seconds: float) -> None:
        if rows < 1 or width < 1 or seconds <= 0:
            return
        recent = self._recent.setdefault((rows, width), deque(maxlen=RECENT_MEASUREMENTS))
        recent.append(seconds)
        # A median: one forward that met a pause (a compilation, another process on the core)
        # does not decide the draft length for long.
        self.seconds[rows, width] = statistics.median_low(recent)
        self._line = None

    def estimate(self, rows: int, width: int) -> Optional[float]:
        """The measured seconds of this shape, else the fitted line's; None before any measurement."""
        if width == 0:
            return 0.0
        if (rows, width) in self.seconds:
            return self.seconds[rows, width]
        if not self.seconds:
            return None
        if self._line is None:
            if self.steps:  # a step's seconds against the rows it ran
                self._line = _fit_line({r: s / w for (r, w), s in self.seconds.items()})
            else:  # a forward's seconds against its tokens
                self._line = _fit_line({r * w: s for (r, w), s in self.seconds.items()})
        return width * self._line(rows) if self.steps else self._line(rows * width)


def _fit_line(points: dict[int, float]) -> Callable[[int], float]:
    """y ~ fixed + slope * x through the points (least squares, both terms >= 0).

    With one x measured the slope is unknown and taken as 0: a forward costs what the measured
    one did, whatever its size (the memory-bound case)."""
    xs, ys = list(points), list(points.values())
    n = len(xs)
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    spread = sum((x - mean_x) ** 2 for x in xs)
    slope = max(0.0, sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / spread) if spread else 0.0
    fixed = mean_y - slope * mean_x
    if fixed < 0:  # cost proportional to size: no fixed part
        fixed, slope = 0.0, sum(x * y for x, y in zip(xs, ys)) / sum(x * x for x in xs)
    return lambda x: fixed + slope * x


class DraftLengths:
    """Chooses each round's draft length for the requests decoding now; shared by every request
    of an engine (`LocalEngine`) or a router replica, which feed it what their rounds measure."""

    def __init__(self):
        self.draft = ForwardCosts(steps=True)
        self.verify = ForwardCosts(steps=False)
        self.acceptance: dict[str, Acceptance] = {}
        # Whole rounds, verdict to verdict, by (requests decoding, k + 1): all a round costs,
        # batches missed and other requests' prefills in between included.
        self.rounds = ForwardCosts(steps=False)
        # A round's seconds outside its forwards, by (requests decoding, whether it drafted): the
        # hops to the workers, the loop, and the time a request waits for a batch it missed.
        self.overhead_s: dict[tuple[int, bool], float] = {}
        self.decoding = 0  # requests in their decode rounds now: the batch their forwards share
        self._chosen: dict[tuple[str, int], int] = {}  # the k last chosen, by (method, batch size)
        self._calls: dict[tuple[str, int], int] = {}  # rounds that asked, by (method, batch size)
        self._lock = threading.Lock()  # `LocalEngine.generate` may run loops on several threads

    @contextlib.contextmanager
    def decoding_request(self) -> Iterator[None]:
        """Count a request among those decoding for as long as its rounds run."""
        with self._lock:
            self.decoding += 1
        try:
            yield
        finally:
            with self._lock:
                self.decoding -= 1

    def choose(self, method: str, cap: int, joining: int = 0) -> int:
        """The k in [0, cap] with the most expected tokens per second at the current batch (and
        `joining` requests about to join it)."""
        if cap <= 0:
            return 0
        rows = max(1, self.decoding + joining)
        current = self._chosen.get((method, rows))
        # Every request of the batch asks each round: count in rounds of the batch.
        self._calls[method, rows] = calls = self._calls.get((method, rows), 0) + 1
        if current is not None and current <= cap:
            if calls % (PROBE_EVERY * rows) == 0:
                # Measure the other side now and then (lossless: k changes no token), so costs
                # measured once, or long ago, do not keep a batch size from speculating, or from not.
                return cap if current == 0 else 0
            if calls % (REDECIDE_EVERY * rows):
                return current  # between decisions (a decision costs more than a round should)
        rates = self._rates(method, rows, cap)
        best = _best(rates, cap)
        # Keep the k this batch size has unless another is clearly better: the requests of one
        # batch then draft alike (a batch's verify is as wide as its widest block), and noise in
        # the estimates does not flip it round by round.
        if current is not None and current <= cap and rates and rates[current] * (1 + STAY_MARGIN) >= rates[best]:
            return current
        self._chosen[method, rows] = best
        return best

    def best(self, method: str, rows: int, cap: int) -> int:
        """The k in [0, cap] the estimates favour for a batch of `rows` requests (cap before any
        measurement: draft, and measure); unlike `choose`, it changes nothing."""
        return _best(self._rates(method, rows, cap), cap)

    def would_draft(self, method: str, cap: int, joining: int = 0) -> bool:
        """Whether rounds at the current batch (and `joining` requests about to join it) would
        draft at all, as the estimates stand."""
        return cap > 0 and self.best(method, max(1, self.decoding + joining), cap) > 0

    def _rates(self, method: str, rows: int, cap: int) -> Optional[list[float]]:
        """Expected tokens per second of a round of each k in [0, cap] at `rows` requests."""
        acceptance = self.acceptance.get(method) or Acceptance()
        rates = []
        for k in range(cap + 1):
            draft_s, verify_s = self.draft.estimate(rows, k), self.verify.estimate(rows, k + 1)
            if draft_s is None or verify_s is None:
                return None
            # A round measured whole (verdict to verdict) is what it costs; else its parts.
            seconds = self.rounds.seconds.get((rows, k + 1)) or draft_s + verify_s + self._overhead(rows, k > 0)
            rates.append(acceptance.expected_tokens(k) / max(seconds, 1e-9))
        return rates

    def record_round(self, method: str, chosen: int, drafted: int, accepted: int, round_s: Optional[float],
                     computed_s: float) -> None:
        """One round of a request: the k it chose, what its draft proposed and the target kept,
        and the round's seconds from the last verdict to this one (None for a first round)
        against its forwards' seconds."""
        drafting = drafted > 0
        with self._lock:
            if drafting:
                self.acceptance.setdefault(method, Acceptance()).record(drafted, accepted)
            if round_s is None:
                return
            rows = max(1, self.decoding)
            self.rounds.record(rows, chosen + 1, round_s)
            key, gap = (rows, drafting), max(0.0, round_s - computed_s)
            old = self.overhead_s.get(key)
            self.overhead_s[key] = gap if old is None else COST_MEMORY * old + (1 - COST_MEMORY) * gap

    def record_forward(self, kind: str, rows: int, width: int, seconds: float) -> None:
        """A batched forward that answered a request: `kind` "draft" (width: steps) or "verify"
        (width: tokens per block). Every request of the batch reports it; a shape's estimate is
        the low median of its recent measurements, which the repeats do not move."""
        with self._lock:
            (self.draft if kind == "draft" else self.verify).record(rows, width, seconds)

    def _overhead(self, rows: int, drafting: bool) -> float:
        """A round's time outside its forwards at this batch: measured, else the nearest batch
        size measured (a round that drafts taken as one that does not, if need be), else 0."""
        for flag in (drafting, not drafting):
            known = [r for r, f in self.overhead_s if f == flag]
            if known:
                return self.overhead_s[min(known, key=lambda r: abs(r - rows)), flag]
        return 0.0


def _best(rates: Optional[list[float]], cap: int) -> int:
    """The k with the highest rate, if drafting promises clearly more than plain decoding (the
    draft's prefill and cache, and its share of the cores, are not in the rates); cap before any
    measurement: draft, and measure."""
    if rates is None:
        return cap
    best = max(range(cap + 1), key=rates.__getitem__)
    return best if rates[best] >= (1 + SPECULATION_MARGIN) * rates[0] else 0
