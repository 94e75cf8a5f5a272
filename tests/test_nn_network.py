"""digitnet.nn.network: the whole chain rule against central finite differences in float64
(parameters and input gradient, conv stacks and every cost × output pairing), a hand-worked
SGD step, the flat parameter layout, init, forward, scores."""

from __future__ import annotations

import numpy as np
import pytest

from digitnet.errors import UsageError
from digitnet.nn.conv import Conv, MaxPool
from digitnet.nn.functions import ACTIVATIONS, COSTS, HIDDEN_ACTIVATIONS, one_hot
from digitnet.nn.layers import Activation, Dense, Dropout, Flatten
from digitnet.nn.network import Network, dense_layers
from digitnet.nn.optim import SGD

EPS = 1e-6


def numeric_gradient(net: Network, x, labels, train=False, rng_seed=None):
    """Central differences of the mean cost with respect to every parameter. A training-mode
    pass gets a Generator seeded afresh each time, so dropout draws the same mask throughout."""
    def cost():
        rng = np.random.default_rng(rng_seed) if rng_seed is not None else None
        return net.cost_and_gradient(x, labels, train, rng)[0]

    g = np.zeros_like(net.params)
    for k in range(net.params.size):
        old = net.params[k]
        net.params[k] = old + EPS
        plus = cost()
        net.params[k] = old - EPS
        minus = cost()
        net.params[k] = old
        g[k] = (plus - minus) / (2 * EPS)
    return g


def numeric_input_gradient(net: Network, x, targets):
    """Central differences of Σ_n ln a_L[n, target_n] with respect to every input value."""
    def f(xx):
        a = net.predict_proba(xx)
        return float(np.log(a[np.arange(len(xx)), targets]).sum())

    g = np.zeros_like(x)
    flat, gflat = x.reshape(-1), g.reshape(-1)
    for k in range(flat.size):
        old = flat[k]
        flat[k] = old + EPS
        plus = f(x)
        flat[k] = old - EPS
        minus = f(x)
        flat[k] = old
        gflat[k] = (plus - minus) / (2 * EPS)
    return g


def float64_net(layers, input_shape, cost, seed=3):
    """A seeded network in float64 with non-zero biases too."""
    net = Network.init(layers, input_shape, cost, seed=seed).astype(np.float64)
    net.params += np.random.default_rng(seed + 100).normal(0, 0.1, net.params.shape)
    return net


PAIRINGS = [("quadratic", "sigmoid"), ("quadratic", "softmax"), ("cross-entropy", "softmax"),
            ("cross-entropy", "sigmoid")]


@pytest.mark.parametrize("cost, output", PAIRINGS)
@pytest.mark.parametrize("activation", HIDDEN_ACTIVATIONS)
def test_dense_backprop_matches_finite_differences(activation, cost, output):
    """Every hidden activation with every cost × output pairing; cross-entropy with softmax
    takes the δ_L = a − y shortcut, the others go through the output activation's backward."""
    rng = np.random.default_rng(1)
    net = float64_net(dense_layers((6, 5, 4, 3), activation, output), (1, 2, 3), cost)
    x = rng.random((7, 6))
    labels = rng.integers(0, 3, 7)
    c, analytic, a_L = net.cost_and_gradient(x, labels)
    # the reported cost is the mean of the cost function on the outputs it returns
    assert c == pytest.approx(COSTS[cost].value(net.predict_proba(x), one_hot(labels, 3, np.float64)).mean())
    np.testing.assert_allclose(a_L, net.predict_proba(x))
    # ReLU's kink: with these inputs no pre-activation sits within eps of 0, so it is smooth here
    np.testing.assert_allclose(analytic, numeric_gradient(net, x, labels), rtol=1e-5, atol=1e-8)


CONV_STACKS = {
    "conv-pad-pool-dense": [Conv(3, 3, padding=1), Activation("tanh"), MaxPool(2), Flatten(), Dense(5),
                            Activation("sigmoid"), Dense(3), Activation("softmax")],
    "strided-conv-conv-overlapping-pool": [Conv(2, 3, stride=2, padding=1), Activation("relu"), Conv(3, 2),
                                           Activation("tanh"), MaxPool(2, 1), Flatten(), Dense(3),
                                           Activation("softmax")],
    "conv-linear-then-pool": [Conv(2, 2, stride=2), MaxPool(2, 1), Flatten(), Dense(4), Activation("relu"),
                              Dense(3), Activation("sigmoid")],
}


@pytest.mark.parametrize("name", list(CONV_STACKS))
@pytest.mark.parametrize("cost", list(COSTS))
def test_conv_stack_backprop_matches_finite_differences(name, cost):
    rng = np.random.default_rng(2)
    layers = [type(l).from_config(l.config()) for l in CONV_STACKS[name]]    # fresh layers each time
    net = float64_net(layers, (2, 7, 6), cost)
    x = rng.random((3, 2 * 7 * 6))
    labels = np.array([0, 2, 1])
    _, analytic, _ = net.cost_and_gradient(x, labels)
    np.testing.assert_allclose(analytic, numeric_gradient(net, x, labels), rtol=1e-5, atol=1e-8)


def test_backprop_through_dropout_in_training_matches_finite_differences():
    layers = [Conv(2, 3), Activation("relu"), Flatten(), Dropout(0.5), Dense(6), Activation("tanh"), Dropout(0.3),
              Dense(3), Activation("softmax")]
    net = float64_net(layers, (1, 5, 5), "cross-entropy")
    x = np.random.default_rng(3).random((4, 25))
    labels = np.array([0, 1, 2, 1])
    _, analytic, _ = net.cost_and_gradient(x, labels, True, np.random.default_rng(11))
    numeric = numeric_gradient(net, x, labels, train=True, rng_seed=11)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-8)
    # and the mask really was drawn: evaluation mode gives another gradient
    assert not np.allclose(analytic, net.cost_and_gradient(x, labels)[1])


@pytest.mark.parametrize("output", ["softmax", "sigmoid"])
@pytest.mark.parametrize("stack", ["dense", "conv"])
def test_input_gradient_matches_finite_differences(stack, output):
    """∂ ln a_L[target]/∂x, what dream climbs, for both output activations."""
    if stack == "dense":
        layers = dense_layers((12, 5, 4), "tanh", output)
    else:
        layers = [Conv(2, 3, padding=1), Activation("tanh"), MaxPool(2), Flatten(), Dense(4), Activation(output)]
    net = float64_net(layers, (1, 4, 3), "cross-entropy")
    x = np.random.default_rng(4).random((3, 12))
    targets = np.array([1, 3, 0])
    a_L, dx = net.input_gradient(x, targets)
    assert dx.shape == (3, 12)
    np.testing.assert_allclose(a_L, net.predict_proba(x))
    np.testing.assert_allclose(dx, numeric_input_gradient(net, x, targets), rtol=1e-5, atol=1e-8)


def test_hand_worked_sgd_step():
    """One input, one sigmoid neuron, quadratic cost, worked by hand."""
    net = Network([Flatten(), Dense(1), Activation("sigmoid")], (1, 1, 1), "quadratic",
                  np.array([0.5, -0.25], np.float64))                    # w, b
    x, label = np.array([[2.0]]), np.array([0])                           # one output: the target is y = 1
    z = 0.5 * 2.0 - 0.25                                                  # 0.75
    a = 1 / (1 + np.exp(-z))
    delta = (a - 1.0) * a * (1 - a)                                       # (a − y) σ'(z)
    c, g, a_L = net.cost_and_gradient(x, label)
    assert a_L[0, 0] == pytest.approx(a) and c == pytest.approx(0.5 * (a - 1) ** 2)
    assert g.tolist() == pytest.approx([delta * 2.0, delta])              # ∂C/∂w = δ x, ∂C/∂b = δ
    eta = 3.0
    SGD(2, dtype=np.float64).step(net.params, g, eta)
    assert net.params.tolist() == pytest.approx([0.5 - eta * delta * 2.0, -0.25 - eta * delta])
    assert net.cost_and_gradient(x, label)[0] < c                         # the step went downhill


def test_flat_layout_views_share_memory_and_decay_mask():
    net = Network.init(dense_layers((4, 3, 2), "relu", "softmax"), (1, 2, 2), "cross-entropy", seed=0)
    assert net.n_params == 4 * 3 + 3 + 3 * 2 + 2 == net.params.size
    # layer 1 (dense3): W at 0, b at 12; layer 3 (dense2): W at 15, b at 21
    assert net.slots == [{}, {"W": (0, (3, 4)), "b": (12, (3,))}, {}, {"W": (15, (2, 3)), "b": (21, (2,))}, {}]
    assert [v["W"].shape for v in net.views if v] == [(3, 4), (2, 3)]
    net.views[3]["W"][0, 0] = 42.0
    assert net.params[15] == 42.0
    net.params[21] = -7.0
    assert net.views[3]["b"][0] == -7.0
    assert all(not v["b"].any() for v in net.views if v and v["b"] is not net.views[3]["b"])   # zero biases
    mask = net.decay_mask()
    assert mask.tolist() == [1] * 12 + [0] * 3 + [1] * 6 + [0] * 2
    g = np.arange(net.n_params, dtype=np.float32)
    assert net.views_of(g)[3]["b"].tolist() == [21.0, 22.0]
    assert net.first_learned == 1


def test_conv_parameters_are_laid_out_in_layer_order():
    net = Network([Conv(2, 3), Activation("relu"), MaxPool(2), Flatten(), Dense(3), Activation("softmax")], (1, 6, 6))
    assert net.shapes == [(1, 6, 6), (2, 4, 4), (2, 4, 4), (2, 2, 2), (8,), (3,), (3,)]
    assert net.slots[0] == {"W": (0, (2, 1, 3, 3)), "b": (18, (2,))}
    assert net.slots[4] == {"W": (20, (3, 8)), "b": (44, (3,))}
    assert net.n_params == 47 and net.decay_mask().sum() == 18 + 24


def test_init_is_seeded_and_scaled_per_activation():
    a = Network.init(dense_layers((784, 256, 10), "relu", "softmax"), (1, 28, 28), seed=5)
    b = Network.init(dense_layers((784, 256, 10), "relu", "softmax"), (1, 28, 28), seed=5)
    c = Network.init(dense_layers((784, 256, 10), "sigmoid", "softmax"), (1, 28, 28), seed=5)
    d = Network.init(dense_layers((784, 256, 10), "relu", "softmax"), (1, 28, 28), seed=6)
    assert np.array_equal(a.params, b.params) and not np.array_equal(a.params, d.params)
    assert a.params.dtype == np.float32
    assert a.views[1]["W"].std() == pytest.approx(np.sqrt(2 / 784), rel=0.05)            # He
    assert c.views[1]["W"].std() == pytest.approx(np.sqrt(2 / (784 + 256)), rel=0.05)    # Xavier
    conv = Network.init([Conv(32, 5), Activation("relu"), Conv(16, 3), Activation("tanh"), Flatten(), Dense(10),
                         Activation("softmax")], (1, 28, 28), seed=0)
    assert conv.views[0]["W"].std() == pytest.approx(np.sqrt(2 / 25), rel=0.1)           # He, fan-in C·k²
    assert conv.views[2]["W"].std() == pytest.approx(np.sqrt(2 / (32 * 9 + 16 * 9)), rel=0.05)
    assert not conv.views[0]["b"].any()


def test_predict_proba_matches_feedforward_in_chunks_and_checks_width():
    net = Network.init([Conv(2, 3), Activation("relu"), Flatten(), Dense(3), Activation("softmax")], (1, 5, 4), seed=2)
    x = np.random.default_rng(0).random((10, 20)).astype(np.float32)
    p = net.predict_proba(x, chunk=3)
    assert p.dtype == np.float32
    np.testing.assert_allclose(p, net.feedforward(x)[-1], rtol=1e-6)
    np.testing.assert_allclose(p, net.predict_proba(x.reshape(10, 5, 4)), rtol=1e-6)   # (m, H, W) works too
    np.testing.assert_allclose(p.sum(axis=1), 1, atol=1e-6)
    with pytest.raises(ValueError, match="20"):
        net.predict_proba(np.zeros((2, 21)))


def test_scores_normalise_sigmoid_outputs_and_keep_softmax():
    rng = np.random.default_rng(0)
    x = rng.random((5, 16), dtype=np.float32)
    sig = Network.init(dense_layers((16, 10), "relu", "sigmoid"), (1, 4, 4), "quadratic", seed=1)
    raw = sig.predict_proba(x)
    s = sig.scores(x)
    np.testing.assert_allclose(s.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_allclose(s, raw / raw.sum(axis=1, keepdims=True), rtol=1e-6)
    soft = Network.init(dense_layers((16, 10), "relu", "softmax"), (1, 4, 4), seed=1)
    assert np.array_equal(soft.scores(x), soft.predict_proba(x))


def test_mlp_recognises_plain_dense_stacks_only():
    assert Network(dense_layers((784, 32, 16, 10), "tanh", "softmax"), (1, 28, 28)).mlp() == \
        ((784, 32, 16, 10), "tanh", "softmax")
    assert Network(dense_layers((784, 10), "relu", "sigmoid"), (1, 28, 28)).mlp() == ((784, 10), "sigmoid", "sigmoid")
    mixed = [Flatten(), Dense(8), Activation("relu"), Dense(8), Activation("tanh"), Dense(10), Activation("softmax")]
    dropout = [Flatten(), Dense(8), Activation("relu"), Dropout(0.5), Dense(10), Activation("softmax")]
    linear = [Flatten(), Dense(8), Dense(10), Activation("softmax")]
    conv = [Conv(2, 3), Activation("relu"), Flatten(), Dense(10), Activation("softmax")]
    for layers in (mixed, dropout, linear, conv):
        assert Network(layers, (1, 6, 6)).mlp() is None, layers


@pytest.mark.parametrize("layers, message", [
    ([Flatten(), Dense(10)], "must end in an output activation"),
    ([Flatten(), Dense(10), Activation("relu")], "must end in an output activation"),
    ([Conv(2, 3), Activation("softmax")], "must be flat"),
    ([Flatten(), Dense(1 << 16), Dense(1 << 16), Activation("softmax")], "parameters is more than"),
])
def test_networks_that_cannot_work_are_refused(layers, message):
    with pytest.raises(ValueError, match=message):
        Network(layers, (1, 28, 28))


def test_params_cost_and_copies():
    layers = dense_layers((4, 3, 2), "relu", "sigmoid")
    with pytest.raises(ValueError, match=r"params must have shape \(23,\)"):
        Network(layers, (1, 2, 2), params=np.zeros(22, np.float32))
    assert Network(layers, (1, 2, 2), "quadratic").cost == "quadratic"
    with pytest.raises(UsageError, match="hinge"):
        Network(layers, (1, 2, 2), "hinge")
    net = Network.init(layers, (1, 2, 2), seed=0)
    for other in (net.copy(), net.astype(np.float64)):
        other.params[:] = 1
        assert not (net.params == 1).all()
    assert net.astype(np.float64).views[1]["W"].dtype == np.float64
    assert net.n_inputs == 4 and net.n_outputs == 2 and net.output == "sigmoid"
    assert ACTIVATIONS[net.output].output
