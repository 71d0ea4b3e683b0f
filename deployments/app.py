"""`build_app`: the SpecVid Ray Serve application from one validated dict.

serve run serve_config.yaml                  # the embedded default (zoo pair, CPU)
serve run deployments.app:build_app target.name=qwen-tiny ...

from deployments.app import build_app
handle = serve.run(build_app({"target": {"name": "qwen-tiny"}, "draft": {"name": "qwen-tiny-draft"}}))
result = await handle.generate.remote({"video": "s3://videos/clip.mp4", "prompt": "..."})
"""

from __future__ import annotations

from ray.serve import Application

from deployments.args import AppArgs, DraftServerArgs, EngineServerArgs, TargetServerArgs
from deployments.colocated import EngineServer
from deployments.router import Router
from deployments.workers import DraftServer, TargetServer
from specvid.config import parse


def build_app(args: dict) -> Application:
    args = parse(AppArgs, args)
    logs = _logging(args)
    if args.colocate:  # one engine process per replica: draft, target and the decode loop
        engine = EngineServer.options(num_replicas=args.target_replicas, logging_config=logs).bind(
            EngineServerArgs.of(args)
        )
        return Router.options(logging_config=logs, max_ongoing_requests=_router_capacity(args)).bind(
            args.model_dump(), engine
        )
    target = TargetServer.options(
        num_replicas=args.target_replicas, logging_config=logs, **_group_options(args)
    ).bind(TargetServerArgs.of(args))
    draft = None
    if args.draft is not None:
        draft = DraftServer.options(num_replicas=args.draft_replicas, logging_config=logs).bind(
            DraftServerArgs.of(args)
        )
    return Router.options(logging_config=logs, max_ongoing_requests=_router_capacity(args)).bind(
        args.model_dump(), target, draft
    )


def _router_capacity(args: AppArgs) -> int:
    """Serve lets this many calls into a router replica; the router's own admission gate is
    what refuses (503 + Retry-After), so Serve must let in more than the gate takes, with
    room for health checks and the model list."""
    return args.admission.max_active + args.admission.max_queued + 16


def _logging(args: AppArgs) -> dict:
    """Serve's access log is a line per call (several per round): on only at DEBUG."""
    return {"log_level": args.log_level, "enable_access_log": args.log_level == "DEBUG"}


def _group_options(args: AppArgs) -> dict:
    """A TP group reserves one bundle per rank on one node (STRICT_PACK: NCCL/gloo stay local)."""
    if args.tp_size == 1:
        return {}  # the replica's target actor reserves the rank's resources
    bundle = {"CPU": args.rank_resources.num_cpus}
    if args.rank_resources.num_gpus:
        bundle["GPU"] = args.rank_resources.num_gpus
    return {
        "ray_actor_options": {"num_cpus": 0},
        "placement_group_bundles": [dict(bundle) for _ in range(args.tp_size)],
        "placement_group_strategy": "STRICT_PACK",
    }
