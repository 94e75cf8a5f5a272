"""digitnet.optim_kernels: the compiled optimizer steps give NumPy's steps' bits (nn.optim,
itself checked by hand in test_nn_optim.py), at any thread count; other dtypes and layouts
take NumPy's step; training takes the compiled one."""

from __future__ import annotations

import numpy as np
import pytest

from digitnet import conv_kernels, optim_kernels
from digitnet.nn.optim import OPTIMIZERS, SGD, Adam


def _state(n: int, seed: int):
    """Parameters, a decay mask (weights 1, biases 0) and gradients of five steps, float32,
    with values of both signs and widely different sizes."""
    rng = np.random.default_rng(seed)
    params = (rng.standard_normal(n) * rng.choice([1e-3, 1.0, 30.0], n)).astype(np.float32)
    mask = (rng.random(n) < 0.8).astype(np.float32)
    grads = [(rng.standard_normal(n) * rng.choice([0.0, 1e-6, 1e-2, 5.0], n)).astype(np.float32) for _ in range(5)]
    return params, mask, grads


@pytest.fixture(params=[1, 2])
def threads(request):
    """The kernels' thread count, set back afterwards."""
    before = conv_kernels._threads()
    conv_kernels.set_threads(request.param)
    yield request.param
    conv_kernels.set_threads(before)


@pytest.mark.parametrize("name,momentum,l2", [("sgd", 0.9, 1e-4), ("sgd", 0.0, 1e-4), ("sgd", 0.9, 0.0),
                                              ("sgd", 0.0, 0.0), ("adam", 0.0, 0.05), ("adam", 0.0, 0.0)])
@pytest.mark.parametrize("n", [1, 7, 1001, 40_000])
def test_compiled_steps_give_numpys_bits(name, momentum, l2, n, threads):
    """Five steps at changing rates: parameters and the optimizer's state agree bit for bit."""
    params, mask, grads = _state(n, seed=n)
    ref, fast = OPTIMIZERS[name](n, momentum, l2, mask), optim_kernels.FAST[name](n, momentum, l2, mask)
    assert type(fast).step is not type(ref).step
    p_ref, p_fast = params.copy(), params.copy()
    for k, g in enumerate(grads):
        ref.step(p_ref, g, 0.05 / (k + 1))
        fast.step(p_fast, g, 0.05 / (k + 1))
        np.testing.assert_array_equal(p_fast, p_ref)
    assert not np.array_equal(p_fast, params)
    if name == "sgd":
        np.testing.assert_array_equal(fast.velocity, ref.velocity)
    else:
        np.testing.assert_array_equal(fast.m, ref.m)
        np.testing.assert_array_equal(fast.v, ref.v)
        assert fast.t == ref.t == 5


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_other_dtypes_and_layouts_take_numpys_step(name, monkeypatch):
    """A float64 vector, or a gradient that is a strided view, is updated by NumPy's step
    (the kernels are compiled for float32 in one piece), with the same result."""
    kernel = "sgd_step" if name == "sgd" else "adam_step"
    monkeypatch.setattr(optim_kernels, kernel, lambda *a: pytest.fail("the compiled step ran"))
    params, mask, grads = _state(50, seed=3)
    ref_cls, fast_cls = (SGD, optim_kernels.CompiledSGD) if name == "sgd" else (Adam, optim_kernels.CompiledAdam)
    settings = (0.9, 1e-3) if name == "sgd" else (1e-3,)
    ref = ref_cls(50, *settings, mask.astype(np.float64), dtype=np.float64)
    fast = fast_cls(50, *settings, mask.astype(np.float64), dtype=np.float64)
    a, b = params.astype(np.float64), params.astype(np.float64)
    ref.step(a, grads[0].astype(np.float64), 0.1)
    fast.step(b, grads[0].astype(np.float64), 0.1)
    assert not np.array_equal(a, params)
    np.testing.assert_array_equal(a, b)

    strided = np.repeat(grads[1], 2)[::2]                 # the same values, not one piece
    ref, fast = OPTIMIZERS[name](50, 0.9, 1e-3, mask), optim_kernels.FAST[name](50, 0.9, 1e-3, mask)
    a, b = params.copy(), params.copy()
    ref.step(a, grads[1], 0.1)
    fast.step(b, strided, 0.1)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("optimizer,kernel", [("sgd", "sgd_step"), ("adam", "adam_step")])
def test_training_takes_the_compiled_step(optimizer, kernel, monkeypatch):
    """``training.train`` steps with the compiled optimizer, once per mini-batch."""
    from digitnet.datasets import Dataset
    from digitnet.training import TrainConfig, train

    calls = []
    real = getattr(optim_kernels, kernel)
    monkeypatch.setattr(optim_kernels, kernel, lambda *a: calls.append(1) or real(*a))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (96, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 96).astype(np.int64)
    data = Dataset("random", images, labels, images[:8], labels[:8])
    config = TrainConfig(layers="conv4x5,pool2,dense16", optimizer=optimizer, epochs=2, batch_size=32,
                         augment=False, val_split=0.0, seed=1)
    train(data, config, threads=1)
    assert len(calls) == 2 * 3
