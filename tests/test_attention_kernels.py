"""digitnet.attention_kernels: the compiled stand-ins of the transformer block and the patch
embedding against the NumPy layers of digitnet.nn.attention (run in float64: an independent
reference), in both backward modes (every token / the class token alone), on one and two
threads; its exp and tanh; the buffer pool under two forwards before one backward; NaN kept;
and the same kernels run as plain Python with NUMBA_DISABLE_JIT=1 in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from digitnet import attention_kernels as ak
from digitnet.conv_kernels import set_threads
from digitnet.nn.attention import Block, ClassToken, PatchEmbed
from digitnet.nn.layers import Activation, Dense
from digitnet.nn.network import Network

ROOT = Path(__file__).resolve().parents[1]


def flat_params(layer, rng, scale=0.3):
    """The layer's parameters as views of one flat float32 vector (as Network lays them out)."""
    shapes = layer.param_shapes()
    flat = rng.normal(0, scale, sum(int(np.prod(s)) for s in shapes.values())).astype(np.float32)
    views, pos = {}, 0
    for name, shape in shapes.items():
        n = int(np.prod(shape))
        views[name] = flat[pos:pos + n].reshape(shape)
        pos += n
    return flat, views


def garbage_grads(layer):
    flat, views = flat_params(layer, np.random.default_rng(99))
    flat[:] = 123.0                       # a backward that adds instead of writing shows
    return views


def reference(layer, p, x, grad, need_dx=True):
    """The NumPy layer's forward and backward in float64."""
    p64 = {k: v.astype(np.float64) for k, v in p.items()}
    out, cache = layer.forward(p64, x.astype(np.float64))
    g = {k: np.zeros(v.shape) for k, v in p.items()}
    dx = layer.backward(p64, cache, grad.astype(np.float64), g, need_dx)
    return out, g, dx


def assert_close(got, want, what, tol=2e-5):
    scale = max(1.0, float(np.abs(want).max()))
    err = float(np.abs(np.asarray(got, np.float64) - want).max())
    assert err <= tol * scale, f"{what}: max error {err:.3g} (scale {scale:.3g})"


BLOCKS = [  # (T, D, heads, mlp, m): 7×7 patches; 4×4 patches, fewer heads; tiny and odd
    (17, 64, 4, 4, 5),
    (50, 32, 2, 2, 3),
    (5, 8, 1, 1, 7),
    (3, 12, 3, 3, 1),
]


@pytest.fixture(params=[1, 2], ids=["1-thread", "2-threads"])
def threads(request):
    set_threads(request.param)
    yield request.param
    set_threads(1)


@pytest.mark.parametrize("T, D, heads, mlp, m", BLOCKS)
@pytest.mark.parametrize("only_class_token", [False, True], ids=["all-tokens", "class-token"])
def test_block_op_matches_the_numpy_layer(T, D, heads, mlp, m, only_class_token, threads):
    rng = np.random.default_rng(T + D)
    layer = Block(heads, D, mlp)
    layer.build((T, D))
    _, p = flat_params(layer, rng)
    x = rng.normal(0, 1, (m, T, D)).astype(np.float32)
    grad = rng.normal(0, 1, x.shape).astype(np.float32)
    if only_class_token:
        grad[:, 1:] = 0                   # what the class-token read-out sends back
    op = ak.BlockOp()
    out, cache = op.forward(layer, p, x)
    assert isinstance(cache, ak._BlockCache)
    g = garbage_grads(layer)
    dx = op.backward(layer, p, cache, grad, g)
    out_ref, g_ref, dx_ref = reference(layer, p, x, grad)
    assert out.dtype == np.float32 and out.shape == (m, T, D)
    assert_close(out, out_ref, "out")
    assert_close(dx, dx_ref, "dx")
    for name in g_ref:
        assert_close(g[name], g_ref[name], name)


def test_block_op_is_deterministic_for_a_thread_count(threads):
    rng = np.random.default_rng(1)
    layer = Block(4, 64)
    layer.build((17, 64))
    _, p = flat_params(layer, rng)
    x = rng.normal(size=(37, 17, 64)).astype(np.float32)
    grad = rng.normal(size=x.shape).astype(np.float32)
    op = ak.BlockOp()
    runs = []
    for _ in range(2):
        out, cache = op.forward(layer, p, x)
        g = garbage_grads(layer)
        dx = op.backward(layer, p, cache, grad, g)
        runs.append((out.copy(), dx.copy(), {k: v.copy() for k, v in g.items()}))
    (o1, d1, g1), (o2, d2, g2) = runs
    assert np.array_equal(o1, o2) and np.array_equal(d1, d2)
    assert all(np.array_equal(g1[k], g2[k]) for k in g1)


def test_block_op_without_dx_writes_the_same_gradients():
    rng = np.random.default_rng(2)
    layer = Block(2, 16)
    layer.build((9, 16))
    _, p = flat_params(layer, rng)
    x = rng.normal(size=(4, 9, 16)).astype(np.float32)
    grad = rng.normal(size=x.shape).astype(np.float32)
    op = ak.BlockOp()
    g1, g2 = garbage_grads(layer), garbage_grads(layer)
    op.backward(layer, p, op.forward(layer, p, x)[1], grad, g1, True)
    assert op.backward(layer, p, op.forward(layer, p, x)[1], grad, g2, False) is None
    assert all(np.array_equal(g1[k], g2[k]) for k in g1)


def test_parameters_and_gradients_that_are_not_one_buffer():
    """Arrays of the layer's shapes that do not lie back to back (not a Network's views) work
    too: the parameters are gathered, the gradients written into each array."""
    rng = np.random.default_rng(3)
    layer = Block(2, 8)
    layer.build((5, 8))
    _, p = flat_params(layer, rng)
    p = {k: v.copy() for k, v in p.items()}
    assert ak._span(p) is None
    x = rng.normal(size=(3, 5, 8)).astype(np.float32)
    grad = rng.normal(size=x.shape).astype(np.float32)
    g = {k: np.full(v.shape, 7.0, np.float32) for k, v in p.items()}
    op = ak.BlockOp()
    op.backward(layer, p, op.forward(layer, p, x)[1], grad, g)
    _, g_ref, _ = reference(layer, p, x, grad)
    for name in g_ref:
        assert_close(g[name], g_ref[name], name)


def test_two_forwards_before_a_backward_keep_both_caches():
    """The pool hands a buffer out again only when nothing holds it: a second forward while the
    first one's cache is alive must not overwrite it."""
    rng = np.random.default_rng(4)
    layer = Block(2, 16)
    layer.build((9, 16))
    _, p = flat_params(layer, rng)
    x1, x2 = (rng.normal(size=(6, 9, 16)).astype(np.float32) for _ in range(2))
    grad = rng.normal(size=x1.shape).astype(np.float32)
    op = ak.BlockOp()
    out1, cache1 = op.forward(layer, p, x1)
    out1_copy = out1.copy()
    out2, cache2 = op.forward(layer, p, x2)
    assert not np.shares_memory(out1, out2)
    assert np.array_equal(out1, out1_copy)
    g = garbage_grads(layer)
    dx = op.backward(layer, p, cache1, grad, g)
    out_ref, g_ref, dx_ref = reference(layer, p, x1, grad)
    assert_close(dx, dx_ref, "dx")
    for name in g_ref:
        assert_close(g[name], g_ref[name], name)
    # once nothing holds them, the next forward takes the buffers back
    before = {id(b) for bufs in op.pool._free.values() for b in bufs}
    del out1, cache1, out2, cache2, dx
    op.forward(layer, p, x1)
    assert {id(b) for bufs in op.pool._free.values() for b in bufs} == before


def test_other_dtypes_and_numpy_caches_go_to_the_numpy_layer():
    rng = np.random.default_rng(5)
    layer = Block(2, 8)
    layer.build((5, 8))
    _, p = flat_params(layer, rng)
    p64 = {k: v.astype(np.float64) for k, v in p.items()}
    x = rng.normal(size=(2, 5, 8))
    op = ak.BlockOp()
    out, cache = op.forward(layer, p64, x)
    assert out.dtype == np.float64 and not isinstance(cache, ak._BlockCache)
    np.testing.assert_array_equal(out, layer.forward(p64, x)[0])
    g = {k: np.zeros(v.shape) for k, v in p.items()}
    dx = op.backward(layer, p64, cache, np.ones_like(x), g)
    np.testing.assert_array_equal(dx, layer.backward(p64, cache, np.ones_like(x), {k: np.zeros(v.shape) for k, v in p.items()}))


def test_a_nan_goes_through_the_block():
    """Divergence must stay visible: the kernels' exp and tanh keep NaN."""
    rng = np.random.default_rng(6)
    layer = Block(2, 8)
    layer.build((5, 8))
    _, p = flat_params(layer, rng)
    x = rng.normal(size=(3, 5, 8)).astype(np.float32)
    x[1, 2, 3] = np.nan
    out, _ = ak.BlockOp().forward(layer, p, x)
    assert np.isnan(out[1]).all() and np.isfinite(out[[0, 2]]).all()


@pytest.mark.parametrize("patch, shape", [(7, (1, 28, 28)), (4, (1, 28, 28)), (2, (2, 4, 6))])
def test_patch_op_matches_the_numpy_layer(patch, shape, threads):
    rng = np.random.default_rng(patch)
    layer = PatchEmbed(patch, 16)
    layer.build(shape)
    _, p = flat_params(layer, rng)
    x = rng.random((9, *shape)).astype(np.float32)
    op = ak.PatchOp()
    out, cache = op.forward(layer, p, x)
    grad = rng.normal(size=out.shape).astype(np.float32)
    g = garbage_grads(layer)
    assert op.backward(layer, p, cache, grad, g, need_dx=False) is None
    out_ref, g_ref, dx_ref = reference(layer, p, x, grad)
    assert_close(out, out_ref, "out")
    for name in g_ref:
        assert_close(g[name], g_ref[name], name)
    # asked for ∂C/∂image (dream, say), the NumPy layer answers from the same cache
    g2 = garbage_grads(layer)
    assert_close(op.backward(layer, p, cache, grad, g2, need_dx=True), dx_ref, "dx")


def test_exp_and_tanh():
    x = np.concatenate([np.linspace(-87, 88, 20001), [-1e-7, 0.0, 1e-7]]).astype(np.float32)
    e = np.array([ak._exp(np.float32(v)) for v in x])
    want = np.exp(x.astype(np.float64))
    assert np.max(np.abs(e - want) / want) < 3e-7
    u = np.linspace(-12, 12, 4001).astype(np.float32)
    t = np.array([ak._tanh(np.float32(v)) for v in u])
    assert np.max(np.abs(t - np.tanh(u.astype(np.float64)))) < 3e-7
    assert ak._exp(np.float32(-200)) < 1e-37 and np.isfinite(ak._exp(np.float32(200)))
    assert np.isnan(ak._exp(np.float32(np.nan))) and np.isnan(ak._tanh(np.float32(np.nan)))
    assert ak._tanh(np.float32(60)) == 1 and ak._tanh(np.float32(-60)) == -1


def vit(layers_extra=()):
    layers = [PatchEmbed(7, 16), Block(2, 16, 2), *layers_extra, Block(4, 16), ClassToken(), Dense(10),
              Activation("softmax")]
    return Network.init(layers, (1, 28, 28), seed=2)


def test_the_whole_network_trains_the_same_with_the_fast_map(threads):
    net = vit()
    x = np.random.default_rng(7).random((24, 784), dtype=np.float32)
    labels = np.arange(24) % 10
    c_ref, g_ref, a_ref = net.astype(np.float64).cost_and_gradient(x, labels)
    c, g, a = net.cost_and_gradient(x, labels, fast=ak.FAST)
    assert c == pytest.approx(c_ref, rel=1e-5)
    assert_close(a, a_ref, "outputs")
    assert_close(g, g_ref, "gradient", tol=5e-5)


NO_JIT_SCRIPT = textwrap.dedent("""
    import numpy as np
    from numba import config
    assert config.DISABLE_JIT
    from digitnet import attention_kernels as ak
    from digitnet.nn.attention import Block, PatchEmbed, ClassToken
    from digitnet.nn.layers import Dense, Activation
    from digitnet.nn.network import Network
    net = Network.init([PatchEmbed(2, 6), Block(2, 6, 2), Block(3, 6, 1), ClassToken(), Dense(3),
                        Activation("softmax")], (1, 4, 6), seed=1)
    x = np.random.default_rng(0).random((5, 24), dtype=np.float32)
    labels = np.array([0, 1, 2, 1, 0])
    c_ref, g_ref, _ = net.astype(np.float64).cost_and_gradient(x, labels)
    c, g, _ = net.cost_and_gradient(x, labels, fast=ak.FAST)
    err = np.abs(g - g_ref).max() / max(1.0, np.abs(g_ref).max())
    print(f"OK {abs(c - c_ref):.3g} {err:.3g}")
""")


def test_the_kernels_run_as_plain_python():
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1", "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", NO_JIT_SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    _, dc, dg = r.stdout.split()
    assert float(dc) < 1e-5 and float(dg) < 5e-5


def test_class_token_op_matches_the_numpy_layer():
    rng = np.random.default_rng(8)
    layer = ClassToken()
    layer.build((5, 6))
    _, p = flat_params(layer, rng)
    x = rng.normal(size=(4, 5, 6)).astype(np.float32)
    grad = rng.normal(size=(4, 6)).astype(np.float32)
    op = ak.ClassTokenOp()
    for _ in range(2):                                   # the second time into a reused array
        out, cache = op.forward(layer, p, x)
        g = garbage_grads(layer)
        dx = op.backward(layer, p, cache, grad, g)
        out_ref, g_ref, dx_ref = reference(layer, p, x, grad)
        assert_close(out, out_ref, "out")
        assert_close(dx, dx_ref, "dx")
        for name in g_ref:
            assert_close(g[name], g_ref[name], name)
        dx[:, 1:] = 5.0                                  # scribble on it: the next backward must clear it
