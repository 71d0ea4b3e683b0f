"""Tensor parallelism of a Video-LLM's language backbone with DeepSpeed AutoTP.

Each rank of a group loads the whole checkpoint, then `shard_language_model` splits the decoder
layers' attention and MLP across the group. The vision tower stays whole on every rank: AutoTP
without an injection policy would also split the vision attention, which breaks its shapes.
After sharding, every rank runs the same calls in the same order (collective all-reduces
inside each decoder layer) and computes the same logits; rank 0's answer is the group's.

DeepSpeed discovers its process group from the environment. Unless RANK, WORLD_SIZE,
MASTER_ADDR, MASTER_PORT and LOCAL_RANK are all set it falls back to MPI discovery and
silently runs a world of one, so `rank_environment` spells every one of them out. A group
always lives on one node (its placement group is STRICT_PACK), so LOCAL_SIZE = WORLD_SIZE: on
CPU, DeepSpeed's shared-memory all-reduce needs it, and without it that kernel crashes the
rank (measured: SIGSEGV in `inference_all_reduce` on the first sharded forward).
"""

from __future__ import annotations

import os
import socket
from typing import Optional

from specvid.errors import ModelLoadError
from specvid.models.adapter import VideoLLM

RANK_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_SIZE", "MASTER_ADDR", "MASTER_PORT")
# Projections whose outputs are partial sums after sharding, so AutoTP all-reduces them.
ROW_PARALLEL_OUTPUTS = ("self_attn.o_proj", "mlp.down_proj")


def rank_environment(
    rank: int, world_size: int, master_addr: str, master_port: int, local_rank: Optional[int] = None
) -> dict[str, str]:
    """The environment one rank of a tensor-parallel group needs."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside a world of {world_size}")
    return {
        "RANK": str(rank),
        "WORLD_SIZE": str(world_size),
        "LOCAL_RANK": str(rank if local_rank is None else local_rank),
        "LOCAL_SIZE": str(world_size),
        "MASTER_ADDR": master_addr,
        "MASTER_PORT": str(master_port),
    }


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the caller retries if it is taken meanwhile)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def default_backend(device: str) -> str:
    """NCCL between GPUs, gloo between CPU processes."""
    return "nccl" if device.startswith("cuda") else "gloo"


def decoder_layer_class(adapter: VideoLLM) -> type:
    """The language backbone's decoder layer class (the unit AutoTP shards)."""
    language_model = adapter.model.model.language_model
    return type(language_model.layers[0])


def shard_language_model(adapter: VideoLLM, tp_size: int, backend: Optional[str] = None) -> VideoLLM:
    """Shard `adapter`'s language backbone over the process group described by the environment.

    Must run in every rank of the group at the same time (it joins the process group).
    """
    missing = [name for name in RANK_VARIABLES if name not in os.environ]
    if missing:
        raise ModelLoadError(f"tensor parallelism needs {', '.join(missing)} in the environment")
    if int(os.environ["WORLD_SIZE"]) != tp_size:
        raise ModelLoadError(f"WORLD_SIZE={os.environ['WORLD_SIZE']} but tp_size={tp_size}")
    try:
        import deepspeed
    except ImportError as e:
        raise ModelLoadError("tensor parallelism needs DeepSpeed: pip install 'specvid[serve]'") from e

    for param in adapter.model.parameters():  # AutoTP slices weights as transformers lays them out
        param.data = param.data.contiguous()
    deepspeed.init_distributed(dist_backend=backend or default_backend(str(adapter.device)))
    engine = deepspeed.init_inference(
        adapter.model,
        tensor_parallel={"tp_size": tp_size},
        dtype=adapter.dtype,
        replace_with_kernel_inject=False,
        injection_policy={decoder_layer_class(adapter): ROW_PARALLEL_OUTPUTS},
    )
    adapter.replace_model(engine.module)
    return adapter
