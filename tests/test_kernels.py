"""The compiled kernels agree with the NumPy backprop in network.py, and with themselves
run as plain Python (NUMBA_DISABLE_JIT=1)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from digitnet import kernels
from digitnet.augment import AugmentRange, augment, draw_transforms
from digitnet.network import ACTIVATIONS, COSTS, Network


def run_kernel(net, x, labels, order, batch, lr, momentum=0.0, l2=0.0, velocity=None):
    """Run every mini-batch of ``order`` through kernels.train_batches; returns stats."""
    velocity = np.zeros_like(net.params) if velocity is None else velocity
    grad = np.zeros_like(net.params)
    acts = np.zeros(batch * sum(net.sizes), np.float32)
    deltas = np.zeros(2 * batch * max(net.sizes[1:]), np.float32)
    stats = np.zeros(2)
    n_batches = -(-len(order) // batch)
    kernels.train_batches(x, labels, order, net.params, velocity, grad, np.array(net.sizes, np.int64), net.w_off,
                          net.b_off, ACTIVATIONS[net.activation].code, COSTS[net.cost].code, batch, 0, n_batches,
                          np.float32(lr), np.float32(momentum), np.float32(l2), acts, deltas, stats)
    return stats


def numpy_sgd(net, x, labels, order, batch, lr, momentum=0.0, l2=0.0):
    """The same SGD written with network.py's NumPy backprop (float64 for reference)."""
    ref = net.astype(np.float64)
    v = np.zeros_like(ref.params)
    decay = np.zeros_like(ref.params)
    for o, W in zip(ref.w_off, ref.weights):
        decay[o:o + W.size] = 1.0
    for start in range(0, len(order), batch):
        idx = order[start:start + batch]
        _, g = ref.flat_gradient(x[idx].astype(np.float64), labels[idx])
        v = momentum * v - lr * (g + l2 * decay * ref.params)
        ref.params += v
    return ref


@pytest.mark.parametrize("cost", list(COSTS))
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_kernel_epoch_matches_numpy_backprop(activation, cost):
    rng = np.random.default_rng(7)
    x = rng.random((53, 12)).astype(np.float32)
    labels = rng.integers(0, 4, 53).astype(np.int64)
    order = rng.permutation(53).astype(np.int64)
    net = Network.init((12, 9, 7, 4), activation, cost, seed=11)
    ref = numpy_sgd(net, x, labels, order, batch=8, lr=0.5, momentum=0.9, l2=1e-3)
    stats = run_kernel(net, x, labels, order, batch=8, lr=0.5, momentum=0.9, l2=1e-3)   # last batch has 5 rows
    np.testing.assert_allclose(net.params, ref.params, rtol=2e-4, atol=2e-5)
    assert 0 <= stats[1] <= 53 and stats[0] > 0


def test_kernel_cost_and_accuracy_stats_match_numpy():
    rng = np.random.default_rng(3)
    x = rng.random((20, 6)).astype(np.float32)
    labels = rng.integers(0, 3, 20).astype(np.int64)
    net = Network.init((6, 5, 3), "sigmoid", "cross-entropy", seed=1)
    before = net.copy()
    stats = run_kernel(net, x, labels, np.arange(20, dtype=np.int64), batch=20, lr=0.1)
    cost, _, _ = before.cost_and_gradients(x, labels)
    acc = (before.predict_proba(x).argmax(1) == labels).sum()
    assert stats[0] / 20 == pytest.approx(cost, rel=1e-5)
    assert stats[1] == acc


def test_jit_and_pure_python_agree(tmp_path):
    """NUMBA_DISABLE_JIT=1 runs the kernels as Python: the results must match the compiled ones."""
    script = (
        "import numpy as np, sys\n"
        "sys.path.insert(0, %r)\n"
        "from test_kernels import run_kernel\n"
        "from digitnet.network import Network\n"
        "from digitnet.augment import augment\n"
        "rng = np.random.default_rng(0)\n"
        "x = rng.random((30, 10)).astype(np.float32); y = rng.integers(0, 3, 30).astype(np.int64)\n"
        "net = Network.init((10, 6, 3), 'relu', 'cross-entropy', seed=0)\n"
        "run_kernel(net, x, y, rng.permutation(30).astype(np.int64), 7, 0.3, 0.5, 1e-3)\n"
        "img = (rng.random((4, 12, 12)) * 255).astype(np.uint8)\n"
        "aug = augment(img, np.random.default_rng(1))\n"
        "np.save(sys.argv[1], np.concatenate([net.params, aug.ravel()]))\n"
    ) % os.path.dirname(__file__)
    outs = []
    for jit in ("0", "1"):
        path = tmp_path / f"out{jit}.npy"
        env = dict(os.environ, NUMBA_DISABLE_JIT=jit)
        subprocess.run([sys.executable, "-c", script, str(path)], check=True, env=env)
        outs.append(np.load(path))
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-5, atol=1e-6)


def test_warp_identity_keeps_image_and_shift_moves_it():
    img = np.zeros((1, 28, 28), np.uint8)
    img[0, 10:14, 12:15] = 255
    ident = np.array([[[1, 0, 0], [0, 1, 0]]], np.float32)
    out = np.empty((1, 784), np.float32)
    kernels.warp_images(img, ident, np.zeros(1, np.int8), out)
    assert np.array_equal(out.reshape(28, 28), img[0] / 255.0)
    shift = np.array([[[1, 0, -2], [0, 1, -3]]], np.float32)   # pull from 2 left / 3 up: content moves right/down
    kernels.warp_images(img, shift, np.zeros(1, np.int8), out)
    assert np.array_equal(out.reshape(28, 28)[13:17, 14:17], np.ones((4, 3)))
    kernels.warp_images(img, ident, np.ones(1, np.int8), out)   # dilation grows the stroke
    assert out.sum() > img.sum() / 255.0


def test_augment_is_seeded_and_stays_in_range(embedded):
    images = embedded.train_images[:64]
    a = augment(images, np.random.default_rng(4))
    b = augment(images, np.random.default_rng(4))
    c = augment(images, np.random.default_rng(5))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.dtype == np.float32 and a.min() >= 0 and a.max() <= 1
    # the digit is moved, not destroyed: most ink survives the transform
    ink = images.reshape(64, -1).sum(1) / 255.0
    assert np.median(a.sum(1) / ink) > 0.7


def test_drawn_transforms_are_invertible_and_bounded():
    mats, thick = draw_transforms(np.random.default_rng(0), 500, AugmentRange())
    dets = np.linalg.det(mats[:, :, :2].astype(np.float64))
    assert np.all(dets > 0.5) and np.all(dets < 2.0)
    assert set(np.unique(thick)) == {-1, 0, 1, 2}
