"""The draft worker: holds draft sessions and proposes k tokens per round."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import torch

from specvid.decoding.sampling import draw, logits_to_probs
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
from specvid.models.vision_share import TowerFeatures


class DraftWorker(Worker):
    salt = 1

    def prefill(self, request: PrefillRequest, keep: Optional[VideoKeep] = None,
                tower: Optional[TowerFeatures] = None) -> int:
        """Open a session; `keep` prunes the draft's video context; `tower`: the target's vision
        tower output, projected here instead of encoding the video again. Returns the context
        length."""
        prompt = self._prompt(request)
        video = self.model.project_features(tower, prompt) if tower is not None else None
        if keep is None:
            state, _ = self.model.prefill(prompt, video_embeddings=video, reserve=request.reserved_rows)
        else:
            if prompt.num_video_tokens != keep.of:
                raise InvalidRequestError(
                    f"pruning needs the draft and the target to share a video token grid; the draft "
                    f"has {prompt.num_video_tokens} video tokens, the target {keep.of}"
                )
            state, _ = self.model.prefill(prompt, keep.indices, video_embeddings=video, positions=keep.positions,
                                          reserve=request.reserved_rows)
        session = self._open(request, prompt, state)
        session.draft_confidence = request.draft_confidence
        return session.state.length

    def propose(self, request_id: str, commit: Commit, k: int) -> Proposal:
        """Up to k tokens continuing the committed sequence (and `commit.assumed`): fewer if the
        draft ends with EOS, or, with adaptive length, after a token it was not confident of."""
        return returned(self.propose_many([(request_id, commit, k)])[0])

    def propose_many(self, calls: Sequence[tuple[str, Commit, int]]) -> list[Union[Proposal, SpecVidError]]:
        """`propose` for several requests. A request alone drafts its whole proposal in one call
        of the decode forward's draft loop (one compiled graph per k); several requests share each
        draft step's forward. A request that cannot go on gets its error in its place of the list."""
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
        shape = (len(drafting), max((r.k for r, _ in drafting), default=0))
        whole = self._whole_block(*drafting[0]) if len(drafting) == 1 else None
        if whole is not None:
            (r, _), drafting = drafting[0], []
            results[r.index] = self._draft_whole(r, whole)
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
        return stamped(results, time.perf_counter() - started, shape)

    def _whole_block(self, r: "_Round", block: list[int]) -> Optional[list[int]]:
        """The block a round feeds when drafted in one call, or None if the decode forward has no
        loop for it. A compiled loop takes 2 tokens or more, so a 1-token block also re-feeds the
        cached token before it (the cache is cropped by one; the row is rewritten alike)."""
        sampled = not r.session.sampling.greedy
        decoder, session = self.model.decoder, r.session
        if r.overtaken():
            return None  # the step loop below answers it without a forward
        if decoder.has_draft_loop(r.k, sampled, len(block)):
            return block
        if len(block) == 1 and session.cached and decoder.has_draft_loop(r.k, sampled, 2):
            block = session.cached[-1:] + block
            del session.cached[-1]
            self.model.crop(session.state, session.state.prompt_length + len(session.cached))
            return block
        return None

    def _draft_whole(self, r: "_Round", block: list[int]) -> Proposal:
        """One round in one call of the draft loop: k tokens, then cut where a step-by-step round
        would have stopped (EOS, an unsure token); the cache keeps only what that round fed."""
        session = r.session
        tokens, chosen, distributions = self.model.draft(session.state, block, r.k, r.choice(self.model.device))
        for i, token in enumerate(tokens):
            going = r.add(token, float(chosen[i]), None if distributions is None else distributions[i],
                          self.model.eos_token_ids)
            if not going:
                break
        session.cached.extend(block + r.tokens[:-1])
        self.model.crop(session.state, session.state.prompt_length + len(session.cached))
        return r.proposal()

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
    probs: list[torch.Tensor] = field(default_factory=list)  # [vocab] each; sampled rounds only
    # One uniform number per step, drawn when the round starts (sampled rounds only): a round
    # takes as many draws however it is run and wherever it stops, so a seeded output does not
    # depend on whether it ran in one call or step by step.
    uniforms: Optional[torch.Tensor] = None  # [k]

    def __post_init__(self):
        if not self.session.sampling.greedy:
            self.uniforms = torch.rand(self.k, generator=self.session.generator)

    def overtaken(self) -> bool:
        """Whether the target's verdict, told while this round drafts ahead, rules its path out."""
        settled = self.session.settled
        if self.ahead is None or settled is None or settled[0] != self.ahead[0]:
            return False
        path, verified = list(self.ahead[1]) + self.tokens, settled[1]
        m = min(len(path), len(verified))
        return path[:m] != list(verified[:m])

    def choice(self, device: torch.device) -> Optional[tuple[torch.Tensor, ...]]:
        """The sampling knobs and draws as the draft loop takes them; None: greedy."""
        params = self.session.sampling
        if params.greedy:
            return None
        knobs = (params.temperature, params.top_k, params.top_p)
        return (*(torch.tensor(v, device=device) for v in knobs), self.uniforms.to(device))

    def choose(self, logits: torch.Tensor, eos: frozenset[int]) -> bool:
        """Pick the next token from the draft's logits [vocab]; whether the round drafts on."""
        params = self.session.sampling
        if params.greedy:
            token = int(torch.argmax(logits))
            # Its probability matters only to the adaptive-length stop: not computed without it.
            sure = self.session.draft_confidence <= 0.0
            probability = 1.0 if sure else float(torch.softmax(logits.float(), -1)[token])
            return self.add(token, probability, None, eos)
        distribution = logits_to_probs(logits[None], params)[0]
        token = int(draw(distribution, self.uniforms[len(self.tokens)]))
        return self.add(token, float(distribution[token]), distribution, eos)

    def add(self, token: int, probability: float, distribution: Optional[torch.Tensor], eos: frozenset[int]) -> bool:
        """Take a drafted token (`probability`: what the draft gave it where it was chosen);
        whether the round drafts on: not after k tokens, EOS, or a token less likely than the
        session's adaptive-length threshold (the draft's own numbers only, so output is unchanged)."""
        self.tokens.append(token)
        if distribution is not None:
            self.probs.append(distribution)
        unsure = probability < self.session.draft_confidence
        return len(self.tokens) < self.k and token not in eos and not unsure

    def proposal(self) -> Proposal:
        probs = torch.stack(self.probs) if self.probs else None
        return Proposal(tuple(self.tokens), probs)
