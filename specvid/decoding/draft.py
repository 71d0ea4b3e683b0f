"""The draft worker: holds draft sessions and proposes k tokens per round."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import torch

from specvid.decoding.sampling import choose_token
from specvid.decoding.session import (
    Commit,
    PrefillRequest,
    Proposal,
    Session,
    VideoKeep,
    Worker,
    returned,
    stamped,
)
from specvid.errors import InvalidRequestError, SpecVidError


class DraftWorker(Worker):
    salt = 1

    def prefill(self, request: PrefillRequest, keep: Optional[VideoKeep] = None) -> int:
        """Open a session; `keep` prunes the draft's video context. Returns the context length."""
        prompt = self._prompt(request)
        if keep is None:
            state, _ = self.model.prefill(prompt, reserve=request.reserved_rows)
        else:
            if prompt.num_video_tokens != keep.of:
                raise InvalidRequestError(
                    f"pruning needs the draft and the target to share a video token grid; the draft "
                    f"has {prompt.num_video_tokens} video tokens, the target {keep.of}"
                )
            state, _ = self.model.prefill(prompt, keep.indices, positions=keep.positions,
                                          reserve=request.reserved_rows)
        session = self._open(request, prompt, state)
        session.draft_confidence = request.draft_confidence
        return session.state.length

    def propose(self, request_id: str, commit: Commit, k: int) -> Proposal:
        """Up to k tokens continuing the committed sequence (and `commit.assumed`): fewer if the
        draft ends with EOS, or, with adaptive length, after a token it was not confident of."""
        return returned(self.propose_many([(request_id, commit, k)])[0])

    def propose_many(self, calls: Sequence[tuple[str, Commit, int]]) -> list[Union[Proposal, SpecVidError]]:
        """`propose` for several requests: each draft step is one forward over the requests
        still drafting. A request that cannot go on gets its error in its place of the list."""
        started = time.perf_counter()
        results: list = [None] * len(calls)
        drafting: list[tuple[_Round, list[int]]] = []  # each round with the block it feeds next
        for i, (request_id, commit, k) in enumerate(calls):
            try:
                session = self.sessions.get(request_id)
                block = self._sync(session, commit)
                self.model.make_room(session.state, len(block) + k - 1)  # the round's last token is not fed
            except SpecVidError as error:
                results[i] = error
                continue
            ahead = (len(session.committed), commit.assumed) if commit.assumed else None
            drafting.append((_Round(i, session, k, ahead), block))
        while drafting:
            for r, _ in drafting:
                if r.overtaken():
                    results[r.index] = r.proposal()
            drafting = [(r, block) for r, block in drafting if results[r.index] is None]
            if not drafting:
                break
            logits = self._feed_many([r.session for r, _ in drafting], [block for _, block in drafting])
            going = []
            for (r, _), block_logits in zip(drafting, logits):
                if r.choose(block_logits[-1], self.model.eos_token_ids):
                    going.append((r, [r.tokens[-1]]))
                else:
                    results[r.index] = r.proposal()
            drafting = going
        return stamped(results, time.perf_counter() - started)

    def settle(self, request_id: str, base: int, verified: Sequence[int]) -> None:
        """The target verified `verified` (accepted + next token) after the first `base`
        committed tokens: a round of the request drafting ahead from there stops at its next
        step once its path leaves them (its proposal would be discarded anyway).

        Greedy sessions only: a sampled round drafting ahead runs to its end, so how many random
        draws it takes, and so a seeded output, never depends on timing.
        """
        try:
            session = self.sessions.get(request_id)
        except SpecVidError:
            return  # nothing drafts for it here any more
        if session.sampling.greedy:
            session.settled = (base, tuple(verified))


@dataclass
class _Round:
    """One request's proposal as it is drafted."""

    index: int  # in the batch of calls
    session: Session
    k: int
    ahead: Optional[tuple[int, tuple[int, ...]]] = None  # drafting ahead: (committed count, assumed tokens)
    tokens: list[int] = field(default_factory=list)
    probs: list[torch.Tensor] = field(default_factory=list)

    def overtaken(self) -> bool:
        """Whether the target's verdict, told while this round drafts ahead, rules its path out."""
        settled = self.session.settled
        if self.ahead is None or settled is None or settled[0] != self.ahead[0]:
            return False
        path, verified = list(self.ahead[1]) + self.tokens, settled[1]
        m = min(len(path), len(verified))
        return path[:m] != list(verified[:m])

    def choose(self, logits: torch.Tensor, eos: frozenset[int]) -> bool:
        """Draw the next token from the draft's logits [vocab]; whether the round drafts on."""
        token, prob = choose_token(logits, self.session.sampling, self.session.generator)
        self.tokens.append(token)
        self.probs.append(prob)
        return len(self.tokens) < self.k and token not in eos and not _unsure(self.session, logits, token, prob)

    def proposal(self) -> Proposal:
        probs = torch.stack(self.probs) if self.probs and not self.session.sampling.greedy else None
        return Proposal(tuple(self.tokens), probs)


def _unsure(session, logits: torch.Tensor, token: int, prob: Optional[torch.Tensor]) -> bool:
    """Whether the draft gave `token` less probability than the session's threshold.

    Greedy rounds measure the softmax of the raw logits; sampled rounds the distribution sampled
    from. Either way the decision uses the draft's own numbers only, so the output is unchanged.
    """
    if session.draft_confidence <= 0.0:
        return False
    p = prob[token] if prob is not None else torch.softmax(logits.float(), -1)[token]
    return float(p) < session.draft_confidence
