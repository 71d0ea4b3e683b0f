"""The application's typed arguments: what `serve_config.yaml` and `build_app` accept."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import AliasChoices, Field, model_validator

from specvid.config import (
    AdmissionLimits,
    BatchingConfig,
    Limits,
    ModelSpec,
    SourceConfig,
    VideoLimits,
    _Strict,
)


class ReplicaResources(_Strict):
    """Resources of one process: a target rank (one bundle of the target replica's placement
    group) or a draft replica."""

    num_cpus: float = Field(1.0, ge=0, description="CPUs reserved.")
    num_gpus: float = Field(0.0, ge=0, description="GPUs reserved (1 for a model on cuda).")

    def ray_options(self) -> dict:
        """The Ray options of an actor that reserves these resources."""
        return {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}


class AppArgs(_Strict):
    """Arguments of the SpecVid application (`deployments.app:build_app`)."""

    target: ModelSpec = Field(description="The target model; its output is what users get.")
    draft: Optional[ModelSpec] = Field(None, description="The draft model; None serves only 'ar'.")
    served_model_name: str = Field("specvid", description="The model name the REST API reports.")
    tp_size: int = Field(1, ge=1, le=64, description="Tensor-parallel ranks per target replica.")
    rank_resources: ReplicaResources = Field(default_factory=ReplicaResources, description="Per target rank.")
    draft_resources: ReplicaResources = Field(
        default_factory=lambda: ReplicaResources(num_cpus=0), description="Per draft replica."
    )
    target_replicas: int = Field(1, ge=1, description="Target replicas (each a TP group).")
    draft_replicas: int = Field(1, ge=1, description="Draft replicas.")
    max_sessions: int = Field(64, ge=1, description="Sessions each worker keeps (LRU) before evicting.")
    admission: AdmissionLimits = Field(
        default_factory=AdmissionLimits, description="Requests a router replica decodes at once and queues."
    )
    batching: BatchingConfig = Field(
        default_factory=BatchingConfig, description="How draft and target replicas batch concurrent requests."
    )
    draft_ahead: bool = Field(
        False,
        validation_alias=AliasChoices("draft_ahead", "pipeline"),
        description="Draft-ahead rounds by default: the draft drafts the next round while the target "
        "verifies this one (same tokens; docs/decoding.md). Pays where draft and target have devices of "
        "their own; on a few shared CPU cores it costs 14-17% of throughput at 8-16 clients "
        "(docs/serving.md). A request's decoding.draft_ahead overrides it. 'pipeline' is accepted as the "
        "field's earlier name.",
    )
    compiled_graphs: bool = Field(
        False,
        description="Rounds reach the worker actors over Ray Compiled Graphs: a tenth of a plain actor "
        "call's overhead, one router per worker actor, but their channel readers spin on a core each while "
        "they wait, idle or not (docs/serving.md). For nodes with cores to spare; false: plain actor calls.",
    )
    decode_threads: int = Field(
        1,
        ge=1,
        description="With colocate: torch threads of the decode rounds; prefills use every CPU the engine "
        "reserves. A decode step is small, and on cores shared with the router and the proxy a second "
        "thread mostly waits for the first (docs/serving.md).",
    )
    colocate: bool = Field(
        False,
        description="Run draft, target and the decode loop in one engine process per replica, the router "
        "relaying its tokens: a request costs one call instead of two remote calls per round (docs/serving.md "
        "measures both). Needs tp_size 1; its process reserves rank_resources plus draft_resources. false: "
        "a draft replica and a target replica (or TP group), the loop in the router.",
    )
    draft_timeout_s: float = Field(
        1.0,
        gt=0,
        le=60,
        description="A draft proposal not answered within this counts as a lost draft: the target "
        "decodes alone (same tokens) while the draft session is restored.",
    )
    request_timeout_s: float = Field(
        300.0, gt=0, description="A request still running after this is stopped."
    )
    api_key_env: str = Field(
        "SPECVID_API_KEY",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Environment variable holding the REST API key. When it is set, every route but "
        "/healthz needs 'Authorization: Bearer <key>'.",
    )
    require_api_key: bool = Field(
        False, description="Refuse to start unless the API key variable is set (production configs)."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING"] = Field(
        "INFO",
        description="INFO: one line per request (id, method, status, tokens, tau, ms); DEBUG adds a line "
        "per draft / verify call of every replica.",
    )
    sources: SourceConfig = Field(default_factory=SourceConfig)
    video_limits: VideoLimits = Field(default_factory=VideoLimits)
    limits: Limits = Field(default_factory=Limits)

    @model_validator(mode="after")
    def _devices_match_resources(self) -> "AppArgs":
        if self.target.device.startswith("cuda") and self.rank_resources.num_gpus < 1:
            raise ValueError("a target on cuda needs rank_resources.num_gpus >= 1")
        if (
            self.draft is not None
            and self.draft.device.startswith("cuda")
            and self.draft_resources.num_gpus <= 0
        ):
            raise ValueError("a draft on cuda needs draft_resources.num_gpus > 0")
        if self.max_sessions < self.admission.max_active:
            raise ValueError(f"max_sessions ({self.max_sessions}) must be at least admission.max_active "
                             f"({self.admission.max_active}): every decoding request holds a session")
        if self.colocate and self.tp_size > 1:
            raise ValueError("colocate runs the target in one process: it needs tp_size 1")
        if self.tp_size > 1 and self.target.compile:
            raise ValueError("target.compile is not supported with tp_size > 1 yet (a sharded forward "
                             "all-reduces inside the graph); set target.compile: false")
        return self


class DraftServerArgs(_Strict):
    """What a `DraftServer` replica (and the draft actor it starts) is built from."""

    model: ModelSpec = Field(description="The draft model.")
    max_sessions: int = Field(64, ge=1, description="Sessions the actor keeps (LRU) before evicting.")
    batching: BatchingConfig = Field(default_factory=BatchingConfig, description="How proposals are batched.")
    resources: ReplicaResources = Field(
        default_factory=lambda: ReplicaResources(num_cpus=0), description="Reserved by the draft actor."
    )

    @classmethod
    def of(cls, app: AppArgs) -> "DraftServerArgs":
        return cls(model=app.draft, max_sessions=app.max_sessions, batching=app.batching,
                   resources=app.draft_resources)


class TargetServerArgs(_Strict):
    """What a `TargetServer` replica (its target actor and TP ranks) is built from."""

    model: ModelSpec = Field(description="The target model.")
    tp_size: int = Field(1, ge=1, le=64, description="Tensor-parallel ranks of the replica.")
    max_sessions: int = Field(64, ge=1, description="Sessions each rank keeps (LRU) before evicting.")
    batching: BatchingConfig = Field(default_factory=BatchingConfig, description="How verifies are batched.")
    rank_resources: ReplicaResources = Field(default_factory=ReplicaResources, description="Per rank.")

    @classmethod
    def of(cls, app: AppArgs) -> "TargetServerArgs":
        return cls(model=app.target, tp_size=app.tp_size, max_sessions=app.max_sessions, batching=app.batching,
                   rank_resources=app.rank_resources)


class EngineServerArgs(_Strict):
    """What an `EngineServer` replica (a colocated engine: draft, target and loop) is built from."""

    target: ModelSpec = Field(description="The target model.")
    draft: Optional[ModelSpec] = Field(None, description="The draft model; None serves only 'ar'.")
    max_sessions: int = Field(64, ge=1, description="Sessions each model keeps (LRU) before evicting.")
    batching: BatchingConfig = Field(default_factory=BatchingConfig, description="How rounds are batched.")
    draft_ahead: bool = Field(False, description="Draft-ahead rounds unless a request says otherwise.")
    decode_threads: int = Field(1, ge=1, description="torch threads of decode rounds (prefills: every reserved CPU).")
    resources: ReplicaResources = Field(default_factory=ReplicaResources, description="Reserved by the engine.")
    # No sources: videos reach the engine decoded, from the router.
    video_limits: VideoLimits = Field(default_factory=VideoLimits)
    limits: Limits = Field(default_factory=Limits)

    @classmethod
    def of(cls, app: AppArgs) -> "EngineServerArgs":
        resources = ReplicaResources(num_cpus=app.rank_resources.num_cpus + app.draft_resources.num_cpus,
                                     num_gpus=app.rank_resources.num_gpus + app.draft_resources.num_gpus)
        return cls(target=app.target, draft=app.draft, max_sessions=app.max_sessions, batching=app.batching,
                   draft_ahead=app.draft_ahead, decode_threads=app.decode_threads, resources=resources,
                   video_limits=app.video_limits, limits=app.limits)
