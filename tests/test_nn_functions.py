"""digitnet.nn.functions: every activation's backward and dlog, every cost's gradient, against
central finite differences in float64; the softmax/cross-entropy shortcut; the registries."""

from __future__ import annotations

import numpy as np
import pytest

from digitnet.errors import UsageError
from digitnet.nn.functions import (ACTIVATIONS, COST_ALIASES, COSTS, HIDDEN_ACTIVATIONS, one_hot, resolve, sigmoid,
                                   softmax, to_unit_float)

EPS = 1e-6


def central_differences(f, x: np.ndarray, eps: float = EPS) -> np.ndarray:
    """∂f/∂x for a scalar f of a float64 array x, one element at a time: (f(x+e) − f(x−e)) / 2e."""
    g = np.zeros_like(x)
    flat, gflat = x.reshape(-1), g.reshape(-1)
    for k in range(flat.size):
        old = flat[k]
        flat[k] = old + eps
        plus = f(x)
        flat[k] = old - eps
        minus = f(x)
        flat[k] = old
        gflat[k] = (plus - minus) / (2 * eps)
    return g


def pre_activations(shape, seed=0):
    """z in float64, kept at least 0.05 away from 0 so ReLU's kink is never inside ±eps."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, shape)
    return np.where(np.abs(z) < 0.05, 0.05 * np.sign(z + 1e-12) + z, z)


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_activation_backward_matches_finite_differences(name):
    """backward(a, g) must be the vector-Jacobian product gᵀ ∂a/∂z (softmax: the full Jacobian)."""
    act = ACTIVATIONS[name]
    z = pre_activations((4, 5), seed=1)
    g = np.random.default_rng(2).normal(size=(4, 5))
    numeric = central_differences(lambda zz: float((g * act.fn(zz)).sum()), z)
    analytic = act.backward(act.fn(z), g)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("name", [n for n, a in ACTIVATIONS.items() if a.output])
def test_output_dlog_matches_finite_differences(name):
    """dlog(a, e_t) is ∂ ln a_t/∂z: what dream's gradient ascent starts from."""
    act = ACTIVATIONS[name]
    z = pre_activations((3, 4), seed=3)
    targets = np.array([0, 3, 1])
    e = one_hot(targets, 4, np.float64)
    numeric = central_differences(lambda zz: float(np.log(act.fn(zz)[np.arange(3), targets]).sum()), z)
    np.testing.assert_allclose(act.dlog(act.fn(z), e), numeric, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("name", list(COSTS))
def test_cost_gradient_matches_finite_differences(name):
    cost = COSTS[name]
    rng = np.random.default_rng(4)
    a = rng.uniform(0.05, 0.95, (5, 3))
    y = one_hot(rng.integers(0, 3, 5), 3, np.float64)
    numeric = central_differences(lambda aa: float(cost.value(aa, y).sum()), a)
    np.testing.assert_allclose(cost.grad(a, y), numeric, rtol=1e-6, atol=1e-9)


def test_cost_values_by_hand():
    a = np.array([[0.7, 0.2, 0.1]])
    y = np.array([[0.0, 1.0, 0.0]])
    assert COSTS["quadratic"].value(a, y)[0] == pytest.approx(0.5 * (0.49 + 0.64 + 0.01))
    assert COSTS["cross-entropy"].value(a, y)[0] == pytest.approx(-np.log(0.2))


def test_softmax_cross_entropy_delta_is_a_minus_y():
    """The shortcut Network.output_delta takes: softmax's Jacobian times −y/a is a − y."""
    z = np.array([[1.0, 2.0, 0.5], [-3.0, 0.0, 4.0]])
    a = softmax(z)
    y = one_hot(np.array([1, 0]), 3, np.float64)
    through = ACTIVATIONS["softmax"].backward(a, COSTS["cross-entropy"].grad(a, y))
    np.testing.assert_allclose(through, a - y, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(a.sum(axis=1), 1.0)
    assert COSTS["cross-entropy"].canonical == "softmax" and COSTS["quadratic"].canonical == ""


def test_sigmoid_and_softmax_are_stable_for_large_inputs():
    z = np.array([-1000.0, 0.0, 1000.0], np.float32)
    with np.errstate(over="raise", invalid="raise", divide="raise"):   # underflow to 0 is the right answer
        s = sigmoid(z)
        p = softmax(np.array([[1000.0, 0.0, -1000.0]]))
    assert s.tolist() == [0.0, 0.5, 1.0]
    assert p.tolist() == [[1.0, 0.0, 0.0]]


def test_registries_name_what_they_allow():
    assert HIDDEN_ACTIVATIONS == ("sigmoid", "relu", "tanh")
    assert not ACTIVATIONS["softmax"].hidden and ACTIVATIONS["softmax"].distribution
    assert {n for n, a in ACTIVATIONS.items() if a.output} == {"sigmoid", "softmax"}
    assert ACTIVATIONS["relu"].init == "he" and ACTIVATIONS["tanh"].init == "xavier"
    assert COSTS["quadratic"].output == "sigmoid" and COSTS["cross-entropy"].output == "softmax"
    for alias, name in COST_ALIASES.items():
        assert resolve(COSTS, alias, "cost", COST_ALIASES) is COSTS[name]
    with pytest.raises(UsageError, match="unknown cost 'hinge'; choose one of: quadratic, cross-entropy"):
        resolve(COSTS, "hinge", "cost", COST_ALIASES)
    with pytest.raises(UsageError, match="unknown activation 'swish'; choose one of: sigmoid, relu, tanh, softmax"):
        resolve(ACTIVATIONS, "swish", "activation")


def test_one_hot_and_unit_floats():
    assert one_hot(np.array([2, 0]), 3).tolist() == [[0, 0, 1], [1, 0, 0]]
    assert one_hot(np.array([1]), 2).dtype == np.float32
    pixels = np.array([[0, 51, 255]], np.uint8)
    x = to_unit_float(pixels)
    assert x.dtype == np.float32 and x.tolist() == [[0.0, np.float32(0.2), 1.0]]
    assert pixels.tolist() == [[0, 51, 255]]          # the input is not touched
