"""digitnet.nn.conv: convolution and max pooling against plain-loop forward passes and central
finite differences in float64, for several kernel/stride/padding combinations; pooling ties."""

from __future__ import annotations

import numpy as np
import pytest

from test_nn_layers import assert_gradients_match, layer_gradcheck

from digitnet.nn.conv import Conv, MaxPool

# (channels, height, width, filters, kernel, stride, padding): non-square maps, so a swapped
# axis shows; strides that leave rows unused; padding wider than half the kernel
CONV_CASES = [
    (1, 5, 6, 2, 3, 1, 0),
    (2, 6, 5, 3, 3, 1, 1),
    (2, 7, 6, 2, 3, 2, 1),
    (1, 7, 7, 2, 2, 2, 0),
    (3, 5, 4, 2, 1, 1, 0),
    (2, 6, 7, 2, 4, 1, 2),
    (1, 8, 6, 3, 5, 3, 2),
    (2, 4, 4, 2, 4, 1, 0),        # kernel as large as the map: one output position
]


def conv_by_loops(x, W, b, stride, padding):
    """The textbook definition, one output value at a time: z[n, f, i, j] =
    Σ_c Σ_u Σ_v W[f, c, u, v] · x_padded[n, c, i·s + u, j·s + v] + b[f]."""
    m, c, h, w = x.shape
    f, _, k, _ = W.shape
    xp = np.zeros((m, c, h + 2 * padding, w + 2 * padding))
    xp[:, :, padding:padding + h, padding:padding + w] = x
    ho, wo = (h + 2 * padding - k) // stride + 1, (w + 2 * padding - k) // stride + 1
    z = np.zeros((m, f, ho, wo))
    for n in range(m):
        for o in range(f):
            for i in range(ho):
                for j in range(wo):
                    z[n, o, i, j] = (W[o] * xp[n, :, i * stride:i * stride + k, j * stride:j * stride + k]).sum() + b[o]
    return z


def pool_by_loops(x, size, stride):
    m, c, h, w = x.shape
    ho, wo = (h - size) // stride + 1, (w - size) // stride + 1
    out = np.zeros((m, c, ho, wo))
    for i in range(ho):
        for j in range(wo):
            out[:, :, i, j] = x[:, :, i * stride:i * stride + size, j * stride:j * stride + size].max(axis=(2, 3))
    return out


@pytest.mark.parametrize("c, h, w, f, k, s, p", CONV_CASES)
def test_conv_forward_matches_the_definition(c, h, w, f, k, s, p):
    layer = Conv(f, k, stride=s, padding=p)
    out_shape = layer.build((c, h, w))
    rng = np.random.default_rng(0)
    W, b = rng.normal(size=(f, c, k, k)), rng.normal(size=f)
    x = rng.normal(size=(2, c, h, w))
    z, _ = layer.forward({"W": W, "b": b}, x)
    expected = conv_by_loops(x, W, b, s, p)
    assert z.shape == expected.shape == (2, *out_shape)
    np.testing.assert_allclose(z, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("c, h, w, f, k, s, p", CONV_CASES)
def test_conv_backward_matches_finite_differences(c, h, w, f, k, s, p):
    analytic, numeric = layer_gradcheck(Conv(f, k, stride=s, padding=p), (c, h, w), m=2, seed=k + s + p)
    assert_gradients_match(analytic, numeric)


def test_conv_backward_without_dx_still_writes_its_gradients():
    layer = Conv(2, 3, padding=1)
    layer.build((1, 4, 4))
    rng = np.random.default_rng(1)
    p = {"W": rng.normal(size=(2, 1, 3, 3)), "b": rng.normal(size=2)}
    out, cache = layer.forward(p, rng.normal(size=(2, 1, 4, 4)))
    delta = rng.normal(size=out.shape)
    g1 = {"W": np.zeros((2, 1, 3, 3)), "b": np.zeros(2)}
    g2 = {"W": np.zeros((2, 1, 3, 3)), "b": np.zeros(2)}
    layer.backward(p, cache, delta, g1, need_dx=True)
    assert layer.backward(p, cache, delta, g2, need_dx=False) is None
    assert np.array_equal(g1["W"], g2["W"]) and np.array_equal(g1["b"], g2["b"])


@pytest.mark.parametrize("c, h, w, size, stride", [
    (2, 4, 6, 2, 2),
    (1, 7, 7, 3, 3),          # the last row and column fall outside every window: zero gradient
    (2, 7, 6, 3, 2),          # overlapping windows: one input can be the max of two
    (1, 5, 5, 2, 1),
])
def test_maxpool_forward_and_backward_without_ties(c, h, w, size, stride):
    layer = MaxPool(size, stride)
    layer.build((c, h, w))
    x = np.random.default_rng(3).permutation(2 * c * h * w).reshape(2, c, h, w) / 7.0   # distinct values
    out, _ = layer.forward({}, x)
    np.testing.assert_array_equal(out, pool_by_loops(x, size, stride))
    analytic, numeric = layer_gradcheck(MaxPool(size, stride), (c, h, w), m=2, x=x)
    assert_gradients_match(analytic, numeric)
    if (h - size) % stride:
        assert not analytic["x"][:, :, -1, :].any()


def test_maxpool_ties_send_the_gradient_to_the_first_maximum():
    """With tied maxima the function has no derivative (finite differences see 0.5 on each tied
    input); backward must pick one subgradient: all of the window's gradient to the first tied
    input in reading order, none to the others, so the total is conserved."""
    x = np.array([[[[1.0, 3.0, 2.0, 2.0],
                    [3.0, 0.0, 2.0, 2.0],
                    [5.0, 1.0, 0.0, 0.0],
                    [0.0, 5.0, 0.0, 0.0]]]])
    # windows: top-left ties at (0,1) and (1,0); top-right four-way tie; bottom-left ties at
    # (2,0) and (3,1); bottom-right four zeros
    layer = MaxPool(2)
    layer.build((1, 4, 4))
    out, cache = layer.forward({}, x)
    assert out[0, 0].tolist() == [[3.0, 2.0], [5.0, 0.0]]
    grad = np.array([[[[1.0, 2.0], [3.0, -4.0]]]])
    dx = layer.backward({}, cache, grad, {})
    expected = np.zeros_like(x)
    expected[0, 0, 0, 1] = 1.0          # first of (0,1), (1,0) in reading order
    expected[0, 0, 0, 2] = 2.0          # first of the four 2s
    expected[0, 0, 2, 0] = 3.0
    expected[0, 0, 2, 2] = -4.0
    np.testing.assert_array_equal(dx, expected)
    for i in range(2):                   # each window's gradient total is what came in
        for j in range(2):
            assert dx[0, 0, 2 * i:2 * i + 2, 2 * j:2 * j + 2].sum() == grad[0, 0, i, j]
    # central differences of Σ grad ⊙ out split a two-way tie evenly (each side sees half):
    # the reason ties are checked this way and not against finite differences
    def f(xx):
        return float((grad * layer.forward({}, xx)[0]).sum())

    for (i, j), g in (((0, 1), 1.0), ((1, 0), 1.0), ((2, 0), 3.0), ((3, 1), 3.0)):
        up, down = x.copy(), x.copy()
        up[0, 0, i, j] += 1e-6
        down[0, 0, i, j] -= 1e-6
        assert (f(up) - f(down)) / 2e-6 == pytest.approx(0.5 * g)


def test_maxpool_ties_across_overlapping_windows_conserve_the_total():
    """A flat map pooled 2×2 at stride 1: every window is a four-way tie, and each sends its
    gradient to its own top-left input."""
    layer = MaxPool(2, 1)
    layer.build((1, 3, 3))
    out, cache = layer.forward({}, np.ones((1, 1, 3, 3)))
    grad = np.arange(1.0, 5.0).reshape(1, 1, 2, 2)
    dx = layer.backward({}, cache, grad, {})
    assert dx[0, 0].tolist() == [[1, 2, 0], [3, 4, 0], [0, 0, 0]]
    assert dx.sum() == grad.sum()


@pytest.mark.parametrize("layer, shape, message", [
    (Conv(4, 7), (1, 5, 5), "a 7×7 kernel does not fit 5×5 maps"),
    (Conv(4, 3), (10,), "needs feature maps"),
    (MaxPool(3), (2, 2, 2), "a 3×3 window does not fit 2×2 maps"),
])
def test_layers_that_do_not_fit_say_why(layer, shape, message):
    with pytest.raises(ValueError, match=message):
        layer.build(shape)


def test_output_shapes_and_names():
    assert Conv(32, 5).build((1, 28, 28)) == (32, 24, 24)
    assert Conv(8, 3, stride=2, padding=1).build((1, 28, 28)) == (8, 14, 14)
    assert Conv(8, 5, padding=2).build((3, 9, 7)) == (8, 9, 7)
    assert MaxPool(2).build((6, 28, 28)) == (6, 14, 14)
    assert MaxPool(3, 2).build((6, 7, 9)) == (6, 3, 4)
    assert Conv(8, 3, stride=2, padding=1).describe() == "conv8x3s2p1" and MaxPool(3, 2).describe() == "pool3s2"
    c = Conv(6, 5, padding=2)
    c.build((1, 28, 28))
    assert c.param_shapes() == {"W": (6, 1, 5, 5), "b": (6,)} and c.macs() == 6 * 28 * 28 * 25
