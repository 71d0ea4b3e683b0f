"""Typed configuration. All user-facing validation lives here.

Each model is a pydantic model with described fields, so the same objects validate CLI flags,
REST bodies and `serve_config.yaml`. A bad value raises `InvalidRequestError` through
`parse()`, never a bare traceback.
"""

from __future__ import annotations

from typing import Literal, Optional, TypeVar

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from specvid.errors import InvalidRequestError


class _Strict(BaseModel):
    # NaN and infinities are refused as "not a finite number" rather than slipping past bounds.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ModelSpec(_Strict):
    """Which model to load and how."""

    name: str = Field(
        description="A built-in name (e.g. 'random-qwen', 'qwen-tiny'), a local checkpoint "
        "directory, or a Hugging Face model id."
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="Weight and activation dtype."
    )
    device: str = Field("cpu", description="torch device, e.g. 'cpu' or 'cuda:0'.")
    attn_implementation: Literal["eager", "sdpa"] = Field(
        "sdpa", description="Attention kernel; 'eager' is needed where attention weights are read."
    )
    compile: bool = Field(
        False,
        description="Compile the decode forward (torch.compile; CUDA graphs on GPU) when the model "
        "loads, warm-up included, so requests run the compiled graphs from the first one. Costs "
        "seconds to a minute at start-up (less with inductor's on-disk cache); output is the same.",
    )
    draft_loops: tuple[int, ...] = Field(
        (),
        description="A draft model with compile: the draft lengths k whose whole proposal (k steps, the "
        "choice of each token, the adaptive-length stop) compiles into one graph at start-up, one call per "
        "round instead of k (docs/bench.md). Other k run step by step. About 50 s of start-up each on a "
        "2-core CPU (seconds from inductor's cache); same tokens.",
    )
    sampled_draft_loops: bool = Field(
        False, description="Compile the draft_loops for sampled rounds too (temperature > 0); twice the start-up."
    )


class VideoSampling(_Strict):
    """How frames are picked from a decoded video and how large they are."""

    num_frames: Optional[int] = Field(
        8, ge=1, le=1024, description="Uniformly sample this many frames (exclusive with fps)."
    )
    fps: Optional[float] = Field(
        None, gt=0, le=60, description="Sample at this rate instead of a fixed count."
    )
    width: int = Field(112, ge=14, le=4096, description="Frame width after resize (pixels).")
    height: int = Field(112, ge=14, le=4096, description="Frame height after resize (pixels).")

    @model_validator(mode="after")
    def _one_rule(self) -> "VideoSampling":
        if (self.num_frames is None) == (self.fps is None):
            raise ValueError("set exactly one of num_frames and fps")
        return self


class VideoLimits(_Strict):
    """Caps that protect a server from oversized input."""

    max_bytes: int = Field(256 * 2**20, ge=1, description="Largest accepted video file (bytes).")
    max_duration_s: float = Field(600.0, gt=0, description="Longest accepted video (seconds).")
    max_frames: int = Field(256, ge=1, description="Most frames sampled from one video.")
    max_pixels: int = Field(
        4096 * 4096, ge=1, description="Largest accepted source frame (width x height)."
    )
    max_sampled_pixels: int = Field(
        256 * 448 * 448,
        ge=1,
        description="Most pixels of the sampled frames together (frames x width x height), checked "
        "before any download: it bounds decode time and memory.",
    )


class SourceConfig(_Strict):
    """Where videos may be read from."""

    local_root: Optional[str] = Field(
        None,
        description="Local paths must resolve inside this directory; None forbids local paths. "
        "Served deployments default to None; a user's own process (the CLI, `LocalEngine`) to '/' "
        "(`SourceConfig.user_files()`).",
    )
    https_allowlist: tuple[str, ...] = Field(
        (), description="Hostnames https:// URLs may name; empty forbids https."
    )
    s3_endpoint_url: Optional[str] = Field(
        None, description="S3 endpoint; defaults to AWS_ENDPOINT_URL or the AWS default."
    )
    s3_allowed_buckets: Optional[tuple[str, ...]] = Field(
        None, description="Buckets s3:// URIs may name; None allows any the credentials reach."
    )
    max_retries: int = Field(3, ge=0, le=10, description="Retries of transient fetch errors.")
    backoff_s: float = Field(0.2, ge=0, le=10, description="First retry delay, doubled each time.")
    timeout_s: float = Field(30.0, gt=0, description="Connect and read timeout per attempt.")

    @classmethod
    def user_files(cls, **fields) -> "SourceConfig":
        """Sources of a user's own process: their local files too (a server refuses them)."""
        return cls(local_root="/", **fields)


class SamplingParams(_Strict):
    """How the target's distribution becomes tokens."""

    temperature: float = Field(
        0.0, ge=0.0, le=10.0, description="0 is greedy; > 0 samples (SD stays lossless)."
    )
    top_k: int = Field(0, ge=0, description="Keep the k most likely tokens; 0 keeps all.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus mass kept; 1 keeps all.")
    seed: Optional[int] = Field(None, description="Seed of the request's random stream.")
    max_tokens: int = Field(64, ge=1, le=8192, description="Most tokens generated.")
    stop_token_ids: tuple[int, ...] = Field(
        (), description="Extra token ids that end generation, besides the model's EOS tokens."
    )
    ignore_eos: bool = Field(
        False, description="Keep generating past the model's EOS tokens (fixed-length benchmark runs)."
    )

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


Method = Literal["ar", "sd", "specvlm", "lvspec", "lvspec+specvlm"]
Relevance = Literal["embedding", "attention", "random"]


class DecodingConfig(_Strict):
    """Which decoding method runs and its knobs."""

    method: Method = Field(
        "sd",
        description="'ar': target alone; 'sd': full-video draft, exact verification; 'specvlm': "
        "the draft reads a pruned share of the video tokens, exact verification; 'lvspec': full-video "
        "draft, loose verification; 'lvspec+specvlm': pruned draft, loose verification.",
    )
    num_draft_tokens: int = Field(
        5,
        ge=1,
        le=64,
        description="Draft tokens per round (k): the most a round proposes ('adaptive' draft_length, "
        "draft_confidence), or every round's ('fixed').",
    )
    draft_length: Literal["adaptive", "fixed"] = Field(
        "adaptive",
        description="'adaptive': the engine picks each round's k, 0 (plain decoding) to num_draft_tokens, "
        "for the requests decoding at once, from the acceptance and forward costs it measures "
        "(docs/decoding.md): speculation where it pays, none where a full batch makes it cost. 'fixed': "
        "every round drafts num_draft_tokens (pins k). Output is the same either way. The loose methods "
        "(lvspec) always draft a fixed k: what they accept depends on what was drafted.",
    )
    draft_confidence: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="Adaptive draft length: a round stops drafting after a token the draft gave less "
        "than this probability (under greedy decoding, its top probability). 0: always k tokens. "
        "Output is unchanged; only how many tokens each round proposes.",
    )
    draft_ahead: Optional[bool] = Field(
        None,
        validation_alias=AliasChoices("draft_ahead", "pipeline"),
        description="Draft-ahead rounds: the draft drafts the next round while the target verifies this "
        "one (docs/decoding.md); output unchanged. None: the deployment's default (AppArgs.draft_ahead in "
        "the Ray Serve application, LocalEngine(draft_ahead=...) in process; both off unless set). "
        "'pipeline' is accepted as the field's earlier name.",
    )
    drop_rate: float = Field(
        0.9, ge=0.0, lt=1.0, description="specvlm: share of the video tokens left out of the draft's context."
    )
    attention_mass: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="specvlm stage I: keep the fewest top-attended video tokens holding this share of "
        "the target's attention (within the budget); stage II fills the rest uniformly.",
    )
    pruning: Literal["staged", "uniform", "none"] = Field(
        "staged",
        description="specvlm: 'staged' (stage I then II), 'uniform' (stage II only), 'none' (keep all).",
    )
    draft_positions: Literal["original", "compact"] = Field(
        "original",
        description="specvlm: kept video tokens keep the target's positions ('original'), or the pruned "
        "sequence is renumbered 0, 1, 2, ... ('compact').",
    )

    lam: float = Field(
        0.7,
        ge=0.0,
        le=1.0,
        description="lvspec: share of each round's drafted positions treated loosely (the least visually "
        "relevant); the rest are anchors that must match. 0 is exact verification.",
    )
    top_n: int = Field(
        10, ge=1, le=4096, description="lvspec: a token's relevance averages its top-N video similarities."
    )
    shift_window: int = Field(
        2,
        ge=0,
        le=16,
        description="lvspec: an anchor mismatch is rescued when the right token sits within this many "
        "positions (docs/decoding.md); 0 turns the position-shift rule off.",
    )
    shift_top_k: int = Field(
        5, ge=1, le=1000, description="lvspec: a rescued draft token must be among the target's top-k."
    )
    filler_ratio: float = Field(
        0.3,
        ge=0.0,
        le=1.0,
        description="lvspec: a filler mismatch is accepted only when the target gives the draft's token at "
        "least this share of its own token's probability; 0 accepts every filler mismatch (the plain LVSpec rule, "
        "which keeps far less of the answer's quality: docs/bench.md).",
    )
    relevance: Relevance = Field(
        "attention",
        description="lvspec: how positions are ranked. 'attention': the target's attention onto the video "
        "while verifying (separates the zoo's anchors best, docs/decoding.md); 'embedding': token-to-video "
        "embedding similarity; 'random': the random relaxation baseline (a random share lam of positions "
        "is loose, whatever the token).",
    )

    @property
    def uses_draft(self) -> bool:
        """Whether a draft model proposes tokens (every method but plain autoregressive 'ar')."""
        return self.method != "ar"

    @property
    def adapts_draft_length(self) -> bool:
        """Whether the engine picks each round's k for the load. Exact methods only: what a
        loose method accepts depends on what was drafted, so its answer would follow the load."""
        return self.uses_draft and self.draft_length == "adaptive" and not self.loose

    @property
    def prunes_video(self) -> bool:
        return self.method in ("specvlm", "lvspec+specvlm")

    @property
    def loose(self) -> bool:
        """Whether the target verifies loosely (LVSpec) rather than by exact match."""
        return self.method in ("lvspec", "lvspec+specvlm")


class Limits(_Strict):
    """Caps on a request's size."""

    max_prompt_chars: int = Field(8192, ge=1, description="Longest accepted prompt (characters).")
    max_context_tokens: int = Field(
        32768,
        ge=16,
        description="Most tokens (video + prompt + max_tokens) in one context; the model's own "
        "context window applies too. Checked before any download.",
    )
    max_body_bytes: int = Field(1 << 20, ge=1024, description="Largest accepted HTTP request body (bytes).")
    max_json_depth: int = Field(32, ge=4, le=256, description="Deepest accepted nesting of a JSON body.")


class AdmissionLimits(_Strict):
    """How many requests one router replica takes on (`specvid.admission`)."""

    max_active: int = Field(16, ge=1, description="Requests decoding at once; their rounds share batched forwards.")
    max_queued: int = Field(
        32, ge=0, description="Requests waiting for a place; beyond this a request is refused at once (503)."
    )
    retry_after_s: float = Field(1.0, gt=0, le=3600, description="The Retry-After a refused client is given.")


class BatchingConfig(_Strict):
    """How a worker gathers the draft and verify calls of concurrent requests into one forward."""

    max_batch_size: int = Field(16, ge=1, le=256, description="Most requests in one batched forward (1: no batching).")
    max_wait_ms: float = Field(
        0.0,
        ge=0,
        le=100,
        description="How long a batch waits for more calls before it runs. Calls that arrive while a batch "
        "runs join the next one anyway, so 0 adds no latency to a lone request.",
    )


class GenerationRequest(_Strict):
    """One request to an engine."""

    video: str = Field(description="Video URI: s3://bucket/key, a local path, or https://.")
    prompt: str = Field(min_length=1, description="The user's question or instruction.")
    sampling: SamplingParams = Field(default_factory=SamplingParams)
    decoding: DecodingConfig = Field(
        default_factory=DecodingConfig,
        validation_alias=AliasChoices("decoding", "spec"),
        description="The decoding method and its knobs ('spec' is accepted as the field's earlier name).",
    )
    video_sampling: VideoSampling = Field(default_factory=VideoSampling)


M = TypeVar("M", bound=BaseModel)


def parse(model: type[M], data) -> M:
    """Validate `data` into `model`, turning pydantic's error into an `InvalidRequestError`."""
    if isinstance(data, model):
        return data
    try:
        return model.model_validate(data)
    except ValidationError as e:
        details = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in e.errors()
        )
        raise InvalidRequestError(f"invalid {model.__name__}: {details}") from None
