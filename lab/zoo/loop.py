"""What both zoo training stages share to make a CPU step cheap.

A step's time goes to matrix products and to making its batch (rendering clips, the mp4
round trip, tokenising). `mixed_precision` runs the products in bfloat16; `prefetched` makes
the next batch while the current step trains.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator, TypeVar

import torch

T = TypeVar("T")


def mixed_precision(enabled: bool):
    """bfloat16 autocast on the CPU; weights, optimiser state and the loss stay float32.

    On a CPU with AVX512-BF16 a bfloat16 matrix product runs ~4.7x faster than a float32 one
    (measured on the 2-core dev box: 990 vs 209 GFLOP/s for [3840, 384] x [384, 1536]); a
    whole training step of the zoo's targets runs ~1.6x faster.
    """
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled)


def prefetched(make: Callable[[int], T], start: int, stop: int) -> Iterator[T]:
    """`make(step)` for each step in [start, stop), the next one made while this one is used.

    `make` runs in one background thread; PyAV, numpy and the tokenizer release the GIL for
    most of their work, so making a batch overlaps the training step instead of adding to it.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="zoo-batches") as pool:
        pending = pool.submit(make, start) if start < stop else None
        for step in range(start, stop):
            current = pending.result()
            pending = pool.submit(make, step + 1) if step + 1 < stop else None
            yield current
