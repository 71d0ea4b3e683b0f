"""The target worker: prefills the prompt and verifies draft proposals.

Acceptance runs here, next to the logits, so only token ids travel back to the caller. That
includes LVSpec's loose rule: the relevance scores, the strict classes and the recent wishes
of the shift rule all live in the target's session.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from specvid.decoding.accept import (
    Verdict,
    anchor_mask,
    greedy_accept,
    loose_accept,
    rejection_accept,
)
from specvid.decoding.relevance import TokenRelevance, vocabulary_mean
from specvid.decoding.sampling import choose_token, logits_to_probs, make_generator
from specvid.decoding.session import (
    Commit,
    LooseVerification,
    PrefillRequest,
    PrefillResult,
    Proposal,
    Session,
    Worker,
)
from specvid.decoding.strict import TokenClasses, strict_positions

# Committed tokens the loose rule looks back at: the open word and the repetition guard.
CONTEXT_TOKENS = 8


@dataclass
class _LooseSession:
    """A request's LVSpec state: its rule, its relevance source, and the shift rule's memory."""

    rule: LooseVerification
    relevance: Optional[TokenRelevance] = None  # embedding scheme
    generator: Optional[torch.Generator] = None  # random scheme
    wishes: tuple[tuple[int, int], ...] = ()

    def position_scores(
        self,
        drafts: torch.Tensor,  # [k]
        targets: torch.Tensor,  # [k]
        video_mass: Optional[torch.Tensor],  # [k] attention scheme only
    ) -> torch.Tensor:
        """One relevance figure per drafted position; the highest become anchors."""  # [k]
        if self.rule.relevance == "embedding":
            return torch.maximum(self.relevance(drafts), self.relevance(targets))
        if self.rule.relevance == "attention":
            return video_mass
        return torch.rand(drafts.numel(), generator=self.generator)


class TargetWorker(Worker):
    salt = 0

    def __init__(self, model, max_sessions: int = 64):
        super().__init__(model, max_sessions)
        self._classes: Optional[TokenClasses] = None
        self._token_mean: Optional[torch.Tensor] = None

    def prefill(self, request: PrefillRequest) -> PrefillResult:
        """Open a session and choose the first generated token.

        The attention-scored prefill (two forwards, the second eager) runs only for methods that
        prune; the others prefill in one forward. Both compute the same cache up to float
        rounding (~1e-6 in the logits), so SpecVLM's output equals `ar`'s as any two kernels do.
        """
        prompt = self._prompt(request)
        wants_embeddings = request.loose is not None and request.loose.relevance == "embedding"
        video = self.model.video_embeddings(prompt) if wants_embeddings else None
        if request.score_video:
            state, logits, scores = self.model.prefill_scored(prompt, video, reserve=request.reserved_rows)
        else:
            state, logits = self.model.prefill(prompt, video_embeddings=video, reserve=request.reserved_rows)
            scores = None
        session = self._open(request, prompt, state)
        if request.loose is not None:
            session.loose = self._loose_session(request, video)
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
        tokens = self._sync(session, commit) + drafts
        if session.loose is not None and drafts:
            return self._verify_loosely(session, tokens, drafts)
        logits = self._feed(session, tokens)[-(len(drafts) + 1) :]  # [k+1, vocab]
        draft_tokens = torch.tensor(drafts, dtype=torch.long)  # [k]
        if session.sampling.greedy:
            return greedy_accept(logits, draft_tokens)
        target_probs = logits_to_probs(logits, session.sampling)  # [k+1, vocab]
        draft_probs = _match_vocab(proposal.probs, target_probs.shape[-1], len(drafts))
        return rejection_accept(target_probs, draft_tokens, draft_probs, session.generator)

    def _verify_loosely(self, session: Session, tokens: list[int], drafts: list[int]) -> Verdict:
        """LVSpec: rank the block's positions, mark the strict ones, accept loosely around them."""
        loose: _LooseSession = session.loose
        k = len(drafts)
        video_mass = None
        if loose.rule.relevance == "attention":
            video_keys = session.prompt.video_index
            logits, mass = self.model.extend_with_video_mass(session.state, tokens, video_keys)
            session.cached.extend(tokens)
            video_mass = mass[-(k + 1) : -1]  # the query before each drafted position
        else:
            logits = self._feed(session, tokens)
        logits = logits[-(k + 1) :]  # [k+1, vocab]
        draft_tokens = torch.tensor(drafts, dtype=torch.long)  # [k]
        target_tokens = logits[:k].argmax(-1)  # [k]
        context = session.committed[-CONTEXT_TOKENS:]
        anchors = anchor_mask(loose.position_scores(draft_tokens, target_tokens, video_mass), loose.rule.lam)
        strict = strict_positions(self._token_classes(), drafts, target_tokens.tolist(), anchors, context)
        verdict = loose_accept(
            logits,
            draft_tokens,
            strict,
            start=len(session.committed),
            shift_window=loose.rule.shift_window,
            shift_top_k=loose.rule.shift_top_k,
            filler_ratio=loose.rule.filler_ratio,
            wishes=loose.wishes,
            context=context,
        )
        loose.wishes = verdict.wishes
        return verdict

    def _loose_session(self, request: PrefillRequest, video: Optional[torch.Tensor]) -> _LooseSession:
        rule = request.loose
        if rule.relevance == "embedding":
            table = self.model.model.get_input_embeddings().weight
            if self._token_mean is None:
                self._token_mean = vocabulary_mean(table)
            return _LooseSession(rule, relevance=TokenRelevance(table, self._token_mean, video, rule.top_n))
        if rule.relevance == "random":
            # A fixed stream when unseeded: every tensor-parallel rank must draw the same scores.
            seed = request.sampling.seed if request.sampling.seed is not None else 0
            return _LooseSession(rule, generator=make_generator(seed, salt=2))
        return _LooseSession(rule)

    def _token_classes(self) -> TokenClasses:
        if self._classes is None:
            special = self.model.special_token_ids | self.model.eos_token_ids
            self._classes = TokenClasses.from_tokenizer(self.model.tokenizer, self.model.vocab_size, special)
        return self._classes


def _match_vocab(draft_probs, vocab: int, k: int) -> torch.Tensor:
    """Draft probabilities over the target vocabulary (padded rows differ by model)."""  # [k, vocab]
    if draft_probs is None:
        return torch.zeros(k, vocab)
    if draft_probs.shape[-1] < vocab:
        return F.pad(draft_probs, (0, vocab - draft_probs.shape[-1]))
    return draft_probs[:, :vocab]
