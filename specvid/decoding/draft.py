"""The draft worker: holds draft sessions and proposes k tokens per round."""

from __future__ import annotations

from typing import Optional

import torch

from specvid.decoding.sampling import choose_token
from specvid.decoding.session import Commit, PrefillRequest, Proposal, VideoKeep, Worker
from specvid.errors import InvalidRequestError


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
        """Up to k tokens continuing the committed sequence: fewer if the draft ends with EOS, or,
        with adaptive length, after a token it was not confident of."""
        session = self.sessions.get(request_id)
        logits = self._feed(session, self._sync(session, commit))[-1]
        tokens, probs = [], []
        for i in range(k):
            token, prob = choose_token(logits, session.sampling, session.generator)
            tokens.append(token)
            probs.append(prob)
            if i == k - 1 or token in self.model.eos_token_ids or _unsure(session, logits, token, prob):
                break
            logits = self._feed(session, [token])[-1]
        return Proposal(tuple(tokens), None if session.sampling.greedy else torch.stack(probs))


def _unsure(session, logits: torch.Tensor, token: int, prob: Optional[torch.Tensor]) -> bool:
    """Whether the draft gave `token` less probability than the session's threshold.

    Greedy rounds measure the softmax of the raw logits; sampled rounds the distribution sampled
    from. Either way the decision uses the draft's own numbers only, so the output is unchanged.
    """
    if session.draft_confidence <= 0.0:
        return False
    p = prob[token] if prob is not None else torch.softmax(logits.float(), -1)[token]
    return float(p) < session.draft_confidence
