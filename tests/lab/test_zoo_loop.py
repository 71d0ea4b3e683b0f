"""The training loop's helpers: bfloat16 autocast and batches made one step ahead."""

import threading

import pytest
import torch

from lab.zoo.loop import mixed_precision, prefetched


def test_prefetched_yields_each_step_in_order_made_off_the_main_thread():
    made_on = []

    def make(step):
        made_on.append(threading.current_thread().name)
        return step * 10

    assert list(prefetched(make, 3, 7)) == [30, 40, 50, 60]
    assert all(name.startswith("zoo-batches") for name in made_on)
    assert list(prefetched(make, 5, 5)) == []  # a finished run makes nothing


def test_prefetched_raises_the_error_of_the_step_that_failed():
    def make(step):
        if step == 2:
            raise ValueError("bad clip at step 2")
        return step

    batches = prefetched(make, 0, 5)
    assert [next(batches), next(batches)] == [0, 1]
    with pytest.raises(ValueError, match="step 2"):
        next(batches)


def test_mixed_precision_computes_in_bfloat16_and_keeps_float32_weights_and_grads():
    torch.manual_seed(0)
    layer = torch.nn.Linear(64, 8)
    x, target = torch.randn(32, 64), torch.randint(8, (32,))
    exact = torch.nn.functional.cross_entropy(layer(x), target)
    with mixed_precision(True):
        logits = layer(x)
        loss = torch.nn.functional.cross_entropy(logits, target)
    loss.backward()
    assert logits.dtype == torch.bfloat16 and loss.dtype == torch.float32
    assert layer.weight.dtype == layer.weight.grad.dtype == torch.float32
    assert abs(loss.item() - exact.item()) < 0.02 * exact.item()
    with mixed_precision(False):
        assert layer(x).dtype == torch.float32
