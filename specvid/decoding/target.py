"""The target worker: prefills the prompt and verifies draft proposals.

Acceptance runs here, next to the logits, so only token ids travel back to the caller. That
includes LVSpec's loose rule: the relevance scores, the strict classes and the recent wishes
of the shift rule all live in the target's session.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional, Sequence, Union

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
    returned,
    stamped,
)
from specvid.decoding.strict import TokenClasses, strict_positions
from specvid.errors import SpecVidError

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
        video, tower = None, None
        if request.share_vision:  # one run of the tower: embeddings here, its output for the draft
            video, tower = self.model.encode_video(prompt)
        elif wants_embeddings:
            video = self.model.video_embeddings(prompt)
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
            tower_features=tower,
        )

    def verify(self, request_id: str, commit: Commit, proposal: Proposal) -> Verdict:
        """Score the pending token plus the k drafts in one forward; apply the acceptance rule."""
        return returned(self.verify_many([(request_id, commit, proposal)])[0])

    def verify_many(self, calls: Sequence[tuple[str, Commit, Proposal]]) -> list[Union[Verdict, SpecVidError]]:
        """`verify` for several requests, their blocks in one forward of the target.

        A request that cannot go on (its session lost, its context full) gets its error in its
        place of the list; the others are verified as if each were alone.
        """
        started = time.perf_counter()
        results: list = [None] * len(calls)
        batch: list[tuple[int, Session, list[int], Proposal]] = []
        for i, (request_id, commit, proposal) in enumerate(calls):
            try:
                session = self.sessions.get(request_id)
                tokens = self._sync(session, commit) + list(proposal.tokens)
                if session.loose is not None and proposal.tokens and session.loose.rule.relevance == "attention":
                    results[i] = self._verify_with_video_mass(session, tokens, proposal)
                    continue
                self.model.make_room(session.state, len(tokens))
            except SpecVidError as error:
                results[i] = error
                continue
            batch.append((i, session, tokens, proposal))
        if batch:
            logits = self._feed_many([b[1] for b in batch], [b[2] for b in batch])
            for (i, session, _, proposal), block in zip(batch, logits):
                results[i] = self._judge(session, block, proposal)
        width = max((len(tokens) for _, _, tokens, _ in batch), default=0)
        return stamped(results, time.perf_counter() - started, (len(batch), width))

    def _verify_with_video_mass(self, session: Session, tokens: list[int], proposal: Proposal) -> Verdict:
        """LVSpec with attention relevance: the verify forward also measures each query's
        attention on the video (an eager forward of its own)."""
        logits, mass = self.model.extend_with_video_mass(session.state, tokens, session.prompt.video_index)
        session.cached.extend(tokens)
        k = len(proposal.tokens)
        return self._judge(session, logits, proposal, video_mass=mass[-(k + 1) : -1])

    def _judge(
        self,
        session: Session,
        logits: torch.Tensor,  # [n, vocab], the block's last k + 1 rows score the proposal
        proposal: Proposal,
        video_mass: Optional[torch.Tensor] = None,  # [k] the query before each drafted position
    ) -> Verdict:
        """The acceptance rule of the session on the target's logits of one verify block."""
        drafts = list(proposal.tokens)
        logits = logits[-(len(drafts) + 1) :]  # [k+1, vocab]
        draft_tokens = torch.tensor(drafts, dtype=torch.long)  # [k]
        if session.loose is not None and drafts:
            return self._judge_loosely(session, logits, draft_tokens, video_mass)
        if session.sampling.greedy:
            return greedy_accept(logits, draft_tokens)
        target_probs = logits_to_probs(logits, session.sampling)  # [k+1, vocab]
        draft_probs = _match_vocab(proposal.probs, target_probs.shape[-1], len(drafts))
        return rejection_accept(target_probs, draft_tokens, draft_probs, session.generator)

    def _judge_loosely(
        self,
        session: Session,
        logits: torch.Tensor,  # [k+1, vocab]
        draft_tokens: torch.Tensor,  # [k]
        video_mass: Optional[torch.Tensor],  # [k]
    ) -> Verdict:
        """LVSpec: rank the block's positions, mark the strict ones, accept loosely around them."""
        loose: _LooseSession = session.loose
        k = draft_tokens.numel()
        target_tokens = logits[:k].argmax(-1)  # [k]
        context = session.committed[-CONTEXT_TOKENS:]
        anchors = anchor_mask(loose.position_scores(draft_tokens, target_tokens, video_mass), loose.rule.lam)
        strict = strict_positions(self._token_classes(), draft_tokens.tolist(), target_tokens.tolist(),
                                  anchors, context)
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
