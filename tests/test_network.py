"""The math: backprop against central finite differences (float64), a hand-worked SGD step,
registries, and the forward pass."""

from __future__ import annotations

import numpy as np
import pytest

from digitnet.errors import UsageError
from digitnet.network import ACTIVATIONS, COSTS, Network, layer_offsets, one_hot, sigmoid, softmax


def numeric_gradient(net: Network, x, labels, eps=1e-6):
    """Central differences of the mean cost with respect to every parameter."""
    g = np.zeros_like(net.params)
    for k in range(net.params.size):
        old = net.params[k]
        net.params[k] = old + eps
        plus = net.cost_and_gradients(x, labels)[0]
        net.params[k] = old - eps
        minus = net.cost_and_gradients(x, labels)[0]
        net.params[k] = old
        g[k] = (plus - minus) / (2 * eps)
    return g


@pytest.mark.parametrize("cost", list(COSTS))
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_backprop_matches_finite_differences(activation, cost):
    rng = np.random.default_rng(1)
    net = Network.init((6, 5, 4, 3), activation, cost, seed=3).astype(np.float64)
    net.params += rng.normal(0, 0.1, net.params.shape)   # non-zero biases too
    x = rng.random((7, 6))
    labels = rng.integers(0, 3, 7)
    c, analytic = net.flat_gradient(x, labels)
    numeric = numeric_gradient(net, x, labels)
    assert np.isfinite(c)
    # ReLU's kink: with these inputs no pre-activation sits within eps of 0, so it is smooth here
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-8)


def test_hand_worked_sgd_step():
    """One neuron in, one sigmoid out, quadratic cost, worked by hand."""
    net = Network((1, 1), "sigmoid", "quadratic", np.array([0.5, -0.25], np.float64))  # w, b
    x, label = np.array([[2.0]]), np.array([0])        # target one-hot for 1 output = [1]
    z = 0.5 * 2.0 - 0.25                               # 0.75
    a = 1 / (1 + np.exp(-z))
    delta = (a - 1.0) * a * (1 - a)                    # (a - y) σ'(z)
    c, nw, nb = net.cost_and_gradients(x, label)
    assert c == pytest.approx(0.5 * (a - 1) ** 2)
    assert nb[0][0] == pytest.approx(delta)
    assert nw[0][0, 0] == pytest.approx(delta * 2.0)
    eta = 3.0
    w_new, b_new = 0.5 - eta * delta * 2.0, -0.25 - eta * delta
    net.params -= eta * net.flat_gradient(x, label)[1]
    assert net.params == pytest.approx([w_new, b_new])
    assert net.cost_and_gradients(x, label)[0] < c     # the step went downhill


def test_softmax_cross_entropy_delta_is_a_minus_y():
    z = np.array([[1.0, 2.0, 0.5]])
    a = softmax(z)
    y = one_hot(np.array([1]), 3, np.float64)
    assert np.allclose(COSTS["cross-entropy"].delta(a, y), a - y)
    assert np.allclose(a.sum(), 1.0)


def test_sigmoid_is_stable_for_large_inputs():
    z = np.array([-1000.0, 0.0, 1000.0], np.float32)
    with np.errstate(all="raise"):
        s = sigmoid(z)
    assert s.tolist() == [0.0, 0.5, 1.0]


def test_layout_and_views_share_memory():
    net = Network.init((4, 3, 2), "relu", "cross-entropy", seed=0)
    w_off, b_off, n = layer_offsets(net.sizes)
    assert n == 4 * 3 + 3 + 3 * 2 + 2 == net.params.size
    assert [W.shape for W in net.weights] == [(3, 4), (2, 3)]
    net.weights[1][0, 0] = 42.0
    assert net.params[w_off[1]] == 42.0
    assert all(np.all(b == 0) for b in net.biases)


def test_init_is_seeded_and_scaled_per_activation():
    a = Network.init((784, 256, 10), "relu", "cross-entropy", seed=5)
    b = Network.init((784, 256, 10), "relu", "cross-entropy", seed=5)
    c = Network.init((784, 256, 10), "sigmoid", "cross-entropy", seed=5)
    assert np.array_equal(a.params, b.params)
    assert a.params.dtype == np.float32
    assert a.weights[0].std() == pytest.approx(np.sqrt(2 / 784), rel=0.05)          # He
    assert c.weights[0].std() == pytest.approx(np.sqrt(2 / (784 + 256)), rel=0.05)  # Xavier


def test_predict_proba_matches_feedforward_and_checks_width():
    net = Network.init((5, 4, 3), "tanh", "cross-entropy", seed=2)
    x = np.random.default_rng(0).random((10, 5)).astype(np.float32)
    p = net.predict_proba(x, chunk=3)
    assert np.allclose(p, net.feedforward(x)[-1])
    assert np.allclose(p.sum(axis=1), 1, atol=1e-6)
    with pytest.raises(ValueError):
        net.predict_proba(np.zeros((2, 6)))


@pytest.mark.parametrize("bad", [dict(activation="softsign"), dict(cost="hinge"), dict(sizes=(5,)), dict(sizes=(5, 0, 2))])
def test_unknown_names_and_bad_sizes_are_usage_errors(bad):
    kwargs = dict(sizes=(5, 3, 2), activation="relu", cost="quadratic") | bad
    with pytest.raises(UsageError) as e:
        Network(**kwargs)
    if "activation" in bad:
        assert "sigmoid, relu, tanh" in str(e.value)
