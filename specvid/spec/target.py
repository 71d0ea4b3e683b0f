"""The target worker: prefills the prompt and verifies draft proposals.

Acceptance runs here, next to the logits, so only token ids travel back to the caller.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from specvid.spec.accept import Verdict, greedy_accept, rejection_accept
from specvid.spec.sampling import choose_token, logits_to_probs
from specvid.spec.session import Commit, PrefillRequest, PrefillResult, Proposal, Worker


class TargetWorker(Worker):
    salt = 0

    def prefill(self, request: PrefillRequest) -> PrefillResult:
        """Open a session and choose the first generated token.

        Always the scored prefill, whether or not the scores are asked for, so every method
        starts from the very same target computation (SpecVLM's output equals `ar`'s).
        """
        prompt = self._prompt(request)
        state, logits, scores = self.model.prefill_scored(prompt)
        session = self._open(request, prompt, state)
        first, _ = choose_token(logits, session.sampling, session.generator)
        return PrefillResult(
            first_token=first,
            stop_token_ids=self.model.eos_token_ids,
            prompt_tokens=len(prompt),
            video_tokens=prompt.num_video_tokens,
            video_scores=scores if request.score_video else None,
        )

    def verify(self, request_id: str, commit: Commit, proposal: Proposal) -> Verdict:
        """Score the pending token plus the k drafts in one forward; apply the acceptance rule."""
        session = self.sessions.get(request_id)
        drafts = list(proposal.tokens)
        logits = self._feed(session, self._sync(session, commit) + drafts)
        logits = logits[-(len(drafts) + 1) :]  # [k+1, vocab]
        draft_tokens = torch.tensor(drafts, dtype=torch.long)  # [k]
        if session.sampling.greedy:
            return greedy_accept(logits, draft_tokens)
        target_probs = logits_to_probs(logits, session.sampling)  # [k+1, vocab]
        draft_probs = _match_vocab(proposal.probs, target_probs.shape[-1], len(drafts))
        return rejection_accept(target_probs, draft_tokens, draft_probs, session.generator)


def _match_vocab(draft_probs, vocab: int, k: int) -> torch.Tensor:
    """Draft probabilities over the target vocabulary (padded rows differ by model)."""  # [k, vocab]
    if draft_probs is None:
        return torch.zeros(k, vocab)
    if draft_probs.shape[-1] < vocab:
        return F.pad(draft_probs, (0, vocab - draft_probs.shape[-1]))
    return draft_probs[:, :vocab]

