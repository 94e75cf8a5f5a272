"""The fused dense kernel agrees with the NumPy layers (``Network.cost_and_gradient`` and
``SGD.step``), with itself run as plain Python (NUMBA_DISABLE_JIT=1), and with itself on the
fallback matrix product (DIGITNET_NO_CBLAS=1); the augmentation kernels."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from digitnet import kernels
from digitnet.augment import AugmentRange, augment, draw_transforms
from digitnet.nn.functions import ACTIVATIONS, COSTS, HIDDEN_ACTIVATIONS
from digitnet.nn.network import Network, dense_layers
from digitnet.nn.optim import SGD

HERE = os.path.dirname(os.path.abspath(__file__))


def dense_net(sizes, activation, cost, seed):
    """A plain dense stack (the shape the kernel trains) for (1, 1, sizes[0]) inputs."""
    return Network.init(dense_layers(sizes, activation, COSTS[cost].output), (1, 1, sizes[0]), cost, seed=seed)


def run_kernel(net, x, labels, order, batch, lr, momentum=0.0, l2=0.0, velocity=None):
    """Every mini-batch of ``order`` through kernels.train_batches, with the layout worked
    out here from the network's slots; returns stats (summed cost, number right)."""
    sizes, hidden, _ = net.mlp()
    dense = [slot for slot in net.slots if slot]
    w_off = np.array([slot["W"][0] for slot in dense], np.int64)
    b_off = np.array([slot["b"][0] for slot in dense], np.int64)
    velocity = np.zeros_like(net.params) if velocity is None else velocity
    acts = np.zeros(batch * sum(sizes), np.float32)
    deltas = np.zeros(2 * batch * max(sizes[1:]), np.float32)
    stats = np.zeros(2)
    n_batches = -(-len(order) // batch)
    kernels.train_batches(x, labels, order, net.params, velocity, np.zeros_like(net.params), np.array(sizes, np.int64),
                          w_off, b_off, ACTIVATIONS[hidden].code, COSTS[net.cost].code, batch, 0, n_batches,
                          np.float32(lr), np.float32(momentum), np.float32(l2), acts, deltas, stats)
    return stats


def numpy_sgd(net, x, labels, order, batch, lr, momentum=0.0, l2=0.0):
    """The same epoch through the NumPy layers in float64: the chain rule of
    Network.cost_and_gradient, then SGD.step (decay on weights only)."""
    ref = net.astype(np.float64)
    opt = SGD(ref.n_params, momentum, l2, ref.decay_mask().astype(np.float64), dtype=np.float64)
    for start in range(0, len(order), batch):
        idx = order[start:start + batch]
        _, g, _ = ref.cost_and_gradient(x[idx].astype(np.float64), labels[idx])
        opt.step(ref.params, g, lr)
    return ref


def kernel_case(activation="relu", cost="cross-entropy"):
    """A small fixed problem: (net, x, labels, order, batch, lr, momentum, l2); the last
    batch is short (53 rows, batch 8)."""
    rng = np.random.default_rng(7)
    x = rng.random((53, 12)).astype(np.float32)
    labels = rng.integers(0, 4, 53).astype(np.int64)
    order = rng.permutation(53).astype(np.int64)
    return dense_net((12, 9, 7, 4), activation, cost, seed=11), x, labels, order, 8, 0.5, 0.9, 1e-3


@pytest.mark.parametrize("cost", list(COSTS))
@pytest.mark.parametrize("activation", HIDDEN_ACTIVATIONS)
def test_kernel_epoch_matches_numpy_layers(activation, cost):
    net, x, labels, order, batch, lr, momentum, l2 = kernel_case(activation, cost)
    start = net.params.copy()
    ref = numpy_sgd(net, x, labels, order, batch, lr, momentum, l2)
    stats = run_kernel(net, x, labels, order, batch, lr, momentum, l2)
    assert not np.allclose(net.params, start, atol=1e-3)             # it trained
    np.testing.assert_allclose(net.params, ref.params, rtol=2e-4, atol=2e-5)
    assert 0 <= stats[1] <= 53 and stats[0] > 0


@pytest.mark.parametrize("momentum, l2", [(0.0, 0.0), (0.0, 1e-2), (0.5, 0.0)])
def test_kernel_plain_and_decayed_steps_match_numpy_layers(momentum, l2):
    """The kernel's other update branches: no momentum (decay folded into the product)."""
    net, x, labels, order, batch, lr, _, _ = kernel_case("sigmoid", "quadratic")
    ref = numpy_sgd(net, x, labels, order, batch, 2.0, momentum, l2)
    run_kernel(net, x, labels, order, batch, 2.0, momentum, l2)
    np.testing.assert_allclose(net.params, ref.params, rtol=2e-4, atol=2e-5)


def test_kernel_codes_are_the_registries_codes():
    assert (ACTIVATIONS["sigmoid"].code, ACTIVATIONS["relu"].code, ACTIVATIONS["tanh"].code) == \
        (kernels.SIGMOID, kernels.RELU, kernels.TANH)
    assert (COSTS["quadratic"].code, COSTS["cross-entropy"].code) == (kernels.QUADRATIC, kernels.CROSS_ENTROPY)


@pytest.mark.parametrize("cost", list(COSTS))
def test_kernel_cost_and_accuracy_stats_match_numpy(cost):
    rng = np.random.default_rng(3)
    x = rng.random((20, 6)).astype(np.float32)
    labels = rng.integers(0, 3, 20).astype(np.int64)
    net = dense_net((6, 5, 3), "sigmoid", cost, seed=1)
    before = net.copy()
    stats = run_kernel(net, x, labels, np.arange(20, dtype=np.int64), batch=20, lr=0.1)
    c, _, a_L = before.cost_and_gradient(x, labels)
    assert stats[0] / 20 == pytest.approx(c, rel=1e-5)
    assert stats[1] == (a_L.argmax(1) == labels).sum()


_SUBPROCESS = (
    "import sys, numpy as np\n"
    "sys.path.insert(0, %r)\n"
    "from test_kernels import kernel_case, run_kernel\n"
    "from digitnet import kernels\n"
    "from digitnet.augment import augment\n"
    "net, x, y, order, batch, lr, momentum, l2 = kernel_case('relu', 'cross-entropy')\n"
    "run_kernel(net, x, y, order, batch, lr, momentum, l2)\n"
    "img = (np.random.default_rng(0).random((4, 12, 12)) * 255).astype(np.uint8)\n"
    "aug = augment(img, np.random.default_rng(1))\n"
    "np.save(sys.argv[1], np.concatenate([net.params, aug.ravel()]))\n"
    "print(kernels.BLAS_SOURCE)\n"
) % HERE


def _run_case(tmp_path, name, **env):
    path = tmp_path / f"{name}.npy"
    r = subprocess.run([sys.executable, "-c", _SUBPROCESS, str(path)], capture_output=True, text=True, timeout=600,
                       env={**os.environ, **env})
    assert r.returncode == 0, r.stderr
    return np.load(path), r.stdout.strip()


def test_jit_and_pure_python_agree(tmp_path):
    """NUMBA_DISABLE_JIT=1 runs the kernels as Python: the results must match the compiled ones."""
    jit, _ = _run_case(tmp_path, "jit", NUMBA_DISABLE_JIT="0")
    python, _ = _run_case(tmp_path, "python", NUMBA_DISABLE_JIT="1")
    np.testing.assert_allclose(jit, python, rtol=1e-5, atol=1e-6)
    net, x, labels, order, batch, lr, momentum, l2 = kernel_case()
    ref = numpy_sgd(net, x, labels, order, batch, lr, momentum, l2)
    np.testing.assert_allclose(jit[:net.n_params], ref.params, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("jit", ["0", "1"])
def test_kernel_without_cblas_still_matches(tmp_path, jit):
    """DIGITNET_NO_CBLAS=1: the kernel multiplies through its fallback (compiled loops, or
    NumPy in plain Python) and must still train like the NumPy layers."""
    out, source = _run_case(tmp_path, f"nocblas{jit}", DIGITNET_NO_CBLAS="1", NUMBA_DISABLE_JIT=jit)
    assert "DIGITNET_NO_CBLAS is set" in source                       # the fallback really ran
    if jit == "0":
        assert source.startswith("compiled loops")
    net, x, labels, order, batch, lr, momentum, l2 = kernel_case()
    ref = numpy_sgd(net, x, labels, order, batch, lr, momentum, l2)
    np.testing.assert_allclose(out[:net.n_params], ref.params, rtol=2e-4, atol=2e-5)


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


def test_objects_are_mirrored_about_half_the_time_and_digits_never():
    """A mirrored shoe is a shoe, a mirrored 2 is not a 2: the objects profile flips left-right
    (a negative determinant) with probability 0.5, and handwriting never; adding the flip left
    handwriting's random stream (so its training runs) as it was."""
    from digitnet.augment import PROFILES

    mats, _ = draw_transforms(np.random.default_rng(0), 2000, PROFILES["objects"])
    mirrored = np.linalg.det(mats[:, :, :2].astype(np.float64)) < 0
    assert 0.45 < mirrored.mean() < 0.55
    rng = np.random.default_rng(3)
    digits, _ = draw_transforms(rng, 500, PROFILES["handwriting"])
    assert np.all(np.linalg.det(digits[:, :, :2].astype(np.float64)) > 0)
    assert rng.random() == np.random.default_rng(3).random(500 * 7 + 1)[-1]   # 7 draws per image, no more


def test_a_mirrored_image_is_the_original_read_right_to_left():
    img = np.zeros((1, 28, 28), np.uint8)
    img[0, 5, 3] = 255
    still = AugmentRange(rotate=0, scale=0, shear=0, shift=0, thinner=0, bolder=0, much_bolder=0, flip=1.0)
    out = augment(img, np.random.default_rng(0), still).reshape(28, 28)
    assert np.array_equal(np.argwhere(out > 0.5), [[5, 24]])
