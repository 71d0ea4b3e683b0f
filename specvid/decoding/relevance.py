"""LVSpec visual relevance: how strongly a token is tied to what the video shows.

Loose verification treats the least relevant drafted positions loosely and keeps the most
relevant ones (the visual anchors: colours, objects, motions) strict. Three rankings exist:

- **embedding** (the default): relevance of a token id = the mean of its top-N cosine
  similarities to the video's projected embeddings (the video tokens the target saw). Both
  sides are mean-centred first: token embeddings by the vocabulary's mean row, video tokens by
  the video's mean, so the shared offset of each space does not dominate the cosine. A token's
  score depends only on its id and the video, so it is computed once per video and id.
- **attention**: the target's attention mass onto the video keys from the query that predicts
  the position, averaged over heads and layers, read during the verify forward
  (`VideoLLM.extend_with_video_mass`); per position, not per id.
- **random**: i.i.d. uniform scores, the random relaxation baseline: a share lam of positions
  is loose whatever the token is.

`specvid bench-relevance` measures how well each ranking separates the zoo's anchors from its
fillers (docs/decoding.md has the figures).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def centred_unit_rows(rows: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """Subtract `mean` from every row and scale rows to unit length."""  # [n, hidden]
    return F.normalize(rows.float() - mean.float(), dim=-1)


def embedding_relevance(
    token_embeddings: torch.Tensor,  # [n, hidden] input embeddings of the scored tokens
    token_mean: torch.Tensor,  # [hidden] mean input embedding over the vocabulary
    video_units: torch.Tensor,  # [V, hidden] centred, unit video embeddings
    top_n: int,
) -> torch.Tensor:
    """Mean of each token's top-N cosine similarities to the video tokens."""  # [n]
    tokens = centred_unit_rows(token_embeddings, token_mean)  # [n, hidden]
    cosine = tokens @ video_units.T  # [n, V]
    return cosine.topk(min(top_n, cosine.shape[-1]), dim=-1).values.mean(-1)


class TokenRelevance:
    """Embedding relevance of token ids against one video, cached by id.

    Only the ids a round drafts or the target predicts are ever scored, so the cost is a few
    [k, hidden] x [hidden, V] products per request, not a pass over the vocabulary.
    """

    def __init__(
        self,
        embedding_table: torch.Tensor,  # [vocab, hidden] the target's input embeddings
        token_mean: torch.Tensor,  # [hidden]
        video_embeddings: torch.Tensor,  # [V, hidden] the projected video tokens the target saw
        top_n: int,
    ):
        self._table = embedding_table
        self._token_mean = token_mean
        self._video = centred_unit_rows(video_embeddings, video_embeddings.float().mean(0))
        self._top_n = top_n
        self._cache: dict[int, float] = {}

    def __call__(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Relevance of each id."""  # [n]
        ids = [int(i) for i in token_ids]
        missing = sorted({i for i in ids if i not in self._cache})
        if missing:
            device = self._video.device
            rows = self._table[torch.tensor(missing, device=self._table.device)].to(device)
            scores = embedding_relevance(rows, self._token_mean.to(device), self._video, self._top_n)
            self._cache.update(zip(missing, scores.tolist()))
        return torch.tensor([self._cache[i] for i in ids])


def vocabulary_mean(embedding_table: torch.Tensor) -> torch.Tensor:
    """The mean input embedding over the vocabulary, the centre of the token side."""  # [hidden]
    return embedding_table.float().mean(0)
