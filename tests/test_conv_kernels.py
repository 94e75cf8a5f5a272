"""digitnet.conv_kernels: each compiled stand-in against the NumPy layer it replaces (an
independent implementation: im2col by strided views and BLAS, argmax by NumPy), on shapes
that catch the awkward cases (stride > 1, padding wider than half the kernel, batch of 1,
a batch smaller than the thread count, maps that pooling crops, tied maxima), at one and two
threads; a whole network's cost and gradient with and without ``fast``; and the kernels run
as plain Python (NUMBA_DISABLE_JIT=1) agreeing with the compiled ones."""

from __future__ import annotations


import numpy as np
import pytest
from jit_helpers import assert_compiled_matches_python

from digitnet import conv_kernels
from digitnet.conv_kernels import FAST, set_threads
from digitnet.nn.layers import Activation, Conv, Dense, Dropout, Flatten, MaxPool
from digitnet.nn.network import Network

# (batch, channels, height, width, filters, kernel, stride, padding)
CONV_CASES = [
    (3, 2, 9, 8, 4, 3, 1, 0),          # non-square maps
    (1, 1, 7, 7, 3, 3, 2, 1),          # batch of 1, stride 2
    (5, 3, 11, 10, 6, 5, 2, 2),        # stride and padding, odd sizes
    (4, 2, 6, 6, 2, 3, 3, 4),          # padding wider than the kernel: whole rows of zeros
    (2, 1, 8, 6, 3, 5, 3, 2),          # stride 3 leaves input rows unread
    (3, 2, 4, 4, 2, 4, 1, 0),          # kernel as large as the map: one output position
    (7, 3, 6, 5, 2, 1, 1, 0),          # 1×1 kernel
    (33, 6, 14, 14, 16, 5, 1, 0),      # LeNet-5's second layer, an odd batch
    (9, 1, 28, 28, 6, 5, 1, 2),        # LeNet-5's first layer
]
THREADS = [1, 2]


@pytest.fixture(params=THREADS, ids=lambda n: f"{n}thr")
def threads(request, monkeypatch):
    """Run the test at this many numba threads (with 2, every kernel takes its parallel
    path, however small the arrays); restore numba's count afterwards."""
    import numba

    before = numba.get_num_threads()
    if request.param > 1:
        monkeypatch.setattr(conv_kernels, "PARALLEL_FROM", 0)
        monkeypatch.setattr(conv_kernels.DenseOp, "PARALLEL_MACS", 0)
    yield set_threads(request.param)
    numba.set_num_threads(before)


def _garbage_grads(p):
    """Gradient views pre-filled with junk: the stand-ins must write, not accumulate."""
    return {name: np.full_like(v, 123.0) for name, v in p.items()}


def _rel_err(a, b):
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "m{}c{}h{}w{}f{}k{}s{}p{}".format(*c))
def test_conv_matches_numpy_layer(case, threads):
    m, c, h, w, f, k, s, pad = case
    rng = np.random.default_rng(sum(case))
    layer = Conv(f, k, s, pad)
    layer.build((c, h, w))
    p = {"W": rng.standard_normal((f, c, k, k)).astype(np.float32), "b": rng.standard_normal(f).astype(np.float32)}
    a = rng.standard_normal((m, c, h, w)).astype(np.float32)
    want, ref_cache = layer.forward(p, a)
    got, cache = FAST["conv"].forward(layer, p, a)
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)

    delta = rng.standard_normal(want.shape).astype(np.float32)
    g_want = {name: np.zeros_like(v) for name, v in p.items()}
    dx_want = layer.backward(p, ref_cache, delta, g_want)
    g_got = _garbage_grads(p)
    dx_got = FAST["conv"].backward(layer, p, cache, delta, g_got)
    for name in p:
        assert _rel_err(g_got[name], g_want[name]) < 1e-5, name
    assert dx_got.shape == a.shape
    np.testing.assert_allclose(dx_got, dx_want, rtol=1e-5, atol=1e-5)

    # the first layer: parameter gradients only, no ∂C/∂x
    g_first = _garbage_grads(p)
    assert FAST["conv"].backward(layer, p, cache, delta, g_first, need_dx=False) is None
    for name in p:
        assert _rel_err(g_first[name], g_want[name]) < 1e-5, name


def test_conv_gradient_sums_over_the_whole_batch_at_any_thread_count():
    """The per-thread partial gradients are summed, none dropped or counted twice: the
    gradient of a batch is the sum of its halves' gradients."""
    rng = np.random.default_rng(5)
    layer = Conv(4, 3, 1, 1)
    layer.build((2, 7, 7))
    p = {"W": rng.standard_normal((4, 2, 3, 3)).astype(np.float32), "b": rng.standard_normal(4).astype(np.float32)}
    a = rng.standard_normal((10, 2, 7, 7)).astype(np.float32)
    delta = rng.standard_normal((10, 4, 7, 7)).astype(np.float32)
    parts = []
    for sl in (slice(0, 10), slice(0, 6), slice(6, 10)):
        g = _garbage_grads(p)
        _, cache = FAST["conv"].forward(layer, p, a[sl])
        FAST["conv"].backward(layer, p, cache, np.ascontiguousarray(delta[sl]), g, need_dx=False)
        parts.append(g)
    for name in p:
        np.testing.assert_allclose(parts[0][name], parts[1][name] + parts[2][name], rtol=1e-5, atol=1e-4)


# (batch, channels, height, width, size, stride)
POOL_CASES = [
    (3, 2, 8, 6, 2, 2),
    (2, 3, 5, 5, 2, 2),        # 5×5 maps: the last row and column are cropped
    (1, 1, 7, 6, 3, 3),        # batch of 1, crop on one side
    (4, 2, 7, 7, 3, 2),        # overlapping windows: gradients add up
    (2, 2, 6, 9, 2, 1),        # stride 1
]


@pytest.mark.parametrize("case", POOL_CASES, ids=lambda c: "m{}c{}h{}w{}k{}s{}".format(*c))
@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
def test_maxpool_matches_numpy_layer(case, ties, threads):
    m, c, h, w, size, stride = case
    rng = np.random.default_rng(sum(case))
    layer = MaxPool(size, stride)
    layer.build((c, h, w))
    # ties: values from {0, 1, 2}, so most windows hold several maxima (the first must win)
    a = (rng.integers(0, 3, (m, c, h, w)) if ties else rng.standard_normal((m, c, h, w))).astype(np.float32)
    want, ref_cache = layer.forward(None, a)
    got, cache = FAST["maxpool"].forward(layer, None, a)
    np.testing.assert_array_equal(got, want)
    grad = rng.standard_normal(want.shape).astype(np.float32)
    dx_want = layer.backward(None, ref_cache, grad, {})
    dx_got = FAST["maxpool"].backward(layer, None, cache, grad, {})
    np.testing.assert_allclose(dx_got, dx_want, rtol=1e-6, atol=1e-6)
    assert FAST["maxpool"].backward(layer, None, cache, grad, {}, need_dx=False) is None


def test_maxpool_nan_is_the_maximum_as_in_numpy():
    layer = MaxPool(2)
    layer.build((1, 2, 4))
    a = np.array([[[[1, 5, 2, 3], [np.nan, 0, 3, 9]]]], np.float32)
    want, _ = layer.forward(None, a)
    got, _ = FAST["maxpool"].forward(layer, None, a)
    np.testing.assert_array_equal(got, want)          # [nan, 9]


def test_relu_matches_numpy_layer(threads):
    rng = np.random.default_rng(2)
    layer = Activation("relu")
    z = rng.standard_normal((5, 3, 4, 4)).astype(np.float32)
    z[0, 0, 0, :2] = 0.0                               # relu'(0) = 0, as the NumPy layer has it
    want, ref_cache = layer.forward(None, z)
    got, cache = FAST["activation"].forward(layer, None, z)
    np.testing.assert_array_equal(got, want)
    grad = rng.standard_normal(z.shape).astype(np.float32)
    np.testing.assert_array_equal(FAST["activation"].backward(layer, None, cache, grad, {}),
                                  layer.backward(None, ref_cache, grad, {}))


@pytest.mark.parametrize("m, n_in, n_out", [(1, 5, 3), (7, 12, 9), (33, 40, 17)])
def test_dense_matches_numpy_layer(m, n_in, n_out, threads):
    rng = np.random.default_rng(m + n_in)
    layer = Dense(n_out)
    layer.build((n_in,))
    p = {"W": rng.standard_normal((n_out, n_in)).astype(np.float32), "b": rng.standard_normal(n_out).astype(np.float32)}
    a = rng.standard_normal((m, n_in)).astype(np.float32)
    want, ref_cache = layer.forward(p, a)
    got, cache = FAST["dense"].forward(layer, p, a)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    delta = rng.standard_normal(want.shape).astype(np.float32)
    g_want = {name: np.zeros_like(v) for name, v in p.items()}
    dx_want = layer.backward(p, ref_cache, delta, g_want)
    for need_dx in (True, False):
        g_got = _garbage_grads(p)
        dx_got = FAST["dense"].backward(layer, p, cache, delta, g_got, need_dx)
        for name in p:
            assert _rel_err(g_got[name], g_want[name]) < 1e-5, name
        if need_dx:
            np.testing.assert_allclose(dx_got, dx_want, rtol=1e-5, atol=1e-5)
        else:
            assert dx_got is None


def test_other_activations_and_float64_go_to_the_numpy_layer():
    rng = np.random.default_rng(3)
    z = rng.standard_normal((4, 6)).astype(np.float32)
    for fn in ("sigmoid", "tanh", "softmax"):
        layer = Activation(fn)
        np.testing.assert_array_equal(FAST["activation"].forward(layer, None, z)[0], layer.forward(None, z)[0])
    layer = Conv(2, 3)
    layer.build((1, 5, 5))
    p = {"W": rng.standard_normal((2, 1, 3, 3)), "b": rng.standard_normal(2)}
    a = rng.standard_normal((2, 1, 5, 5))
    got, cache = FAST["conv"].forward(layer, p, a)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, layer.forward(p, a)[0])


def lenet_like(seed=0, dtype=np.float32):
    """Every stand-in in one small network: conv with padding, ReLU, pooling that crops,
    a strided conv, dropout, dense layers and a softmax output."""
    layers = [Conv(4, 3, 1, 1), Activation("relu"), MaxPool(2), Conv(5, 3, 2, 1), Activation("relu"),
              MaxPool(2, 1), Flatten(), Dropout(0.3), Dense(7), Activation("relu"), Dense(3), Activation("softmax")]
    net = Network.init(layers, (2, 11, 11), "cross-entropy", seed=seed)
    return net if dtype == np.float32 else net.astype(dtype)


def test_network_cost_and_gradient_match_with_fast(threads):
    net = lenet_like()
    rng = np.random.default_rng(0)
    x = rng.random((13, 2 * 11 * 11)).astype(np.float32)
    labels = rng.integers(0, 3, 13)
    c0, g0, a0 = net.cost_and_gradient(x, labels, True, np.random.default_rng(9))
    g1 = np.full_like(net.params, 5.0)
    c1, g1, a1 = net.cost_and_gradient(x, labels, True, np.random.default_rng(9), g1, fast=FAST)
    assert c1 == pytest.approx(c0, rel=1e-5)
    np.testing.assert_allclose(a1, a0, rtol=1e-5, atol=1e-6)
    assert np.abs(g0).max() > 0
    np.testing.assert_allclose(g1, g0, rtol=1e-4, atol=1e-6 * np.abs(g0).max())


def test_blas_thread_count_is_restored():
    if conv_kernels._BLAS_THREADS is None:
        pytest.skip("sgemm is not OpenBLAS here: no thread count to hold")
    get, _ = conv_kernels._BLAS_THREADS
    before = get()
    set_threads(2)
    test_network_cost_and_gradient_match_with_fast(2)
    assert get() == before


def test_jit_and_pure_python_agree(tmp_path):
    """NUMBA_DISABLE_JIT=1 runs the kernels as plain Python: the results must match the compiled ones."""
    assert_compiled_matches_python(tmp_path,
                                   "from test_conv_kernels import lenet_like\nfrom digitnet.conv_kernels import FAST",
                                   "lenet_like(seed=1).cost_and_gradient(x, y, True, np.random.default_rng(2), fast=FAST)")


def test_reused_buffers_never_overwrite_what_a_caller_still_holds():
    """The stand-ins hand out arrays again from batch to batch: only once nothing refers to
    them. Two forward passes kept side by side must both keep their own values."""
    net = lenet_like(seed=3)
    rng = np.random.default_rng(8)
    x1, x2 = rng.random((5, 242)).astype(np.float32), rng.random((5, 242)).astype(np.float32)
    acts1, caches1 = net.trace(x1, fast=FAST)
    kept = [a.copy() for a in acts1]
    flat_view = acts1[6].reshape(-1)             # a view alone must keep its array too
    del acts1[6]
    acts2, _ = net.trace(x2, fast=FAST)
    for a, k in zip(acts1, kept[:6] + kept[7:]):
        np.testing.assert_array_equal(a, k)
    np.testing.assert_array_equal(flat_view, kept[6].reshape(-1))
    assert not np.array_equal(acts2[-1], kept[-1])
    # and once let go, an array is taken again (no allocation per batch)
    first_conv = acts2[1]
    address = first_conv.ctypes.data
    del acts2, first_conv
    acts3, _ = net.trace(x2, fast=FAST)
    assert acts3[1].ctypes.data == address
