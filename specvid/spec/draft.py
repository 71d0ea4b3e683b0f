"""The draft worker: holds draft sessions and proposes k tokens per round."""

from __future__ import annotations

from typing import Optional

import torch

from specvid.spec.sampling import choose_token
from specvid.spec.session import Commit, PrefillRequest, Proposal, Worker


class DraftWorker(Worker):
    salt = 1

    def prefill(self, request: PrefillRequest, keep_video: Optional[torch.Tensor] = None) -> int:
        """Open a session; `keep_video` prunes the draft's video context. Returns its length."""
        session, _ = self._open(request, keep_video)
        return session.state.length

    def propose(self, request_id: str, commit: Commit, k: int) -> Proposal:
        """Up to k tokens continuing the committed sequence (fewer if the draft ends with EOS)."""
        session = self.sessions.get(request_id)
        logits = self._feed(session, self._sync(session, commit))[-1]
        tokens, probs = [], []
        for i in range(k):
            token, prob = choose_token(logits, session.sampling, session.generator)
            tokens.append(token)
            probs.append(prob)
            if i == k - 1 or token in self.model.eos_token_ids:
                break
            logits = self._feed(session, [token])[-1]
        return Proposal(tuple(tokens), None if session.sampling.greedy else torch.stack(probs))
