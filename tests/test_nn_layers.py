"""digitnet.nn.layers: each layer's backward against central finite differences in float64
(its parameters and its input), dropout in both modes, and the config registry."""

from __future__ import annotations

import numpy as np
import pytest

from digitnet.nn.functions import ACTIVATIONS
from digitnet.nn.layers import LAYERS, MAX_UNITS, Activation, Dense, Dropout, Flatten, layer_from_config

EPS = 1e-6


def layer_gradcheck(layer, in_shape, m=3, seed=0, x=None, train=False, rng_seed=None, nudge_from_zero=False):
    """Build ``layer`` for ``in_shape``, run it forward on x (m, *in_shape) in float64 and
    backward with a random upstream gradient R, and compare its parameter gradients and its
    input gradient with central differences of the scalar Σ R ⊙ out.

    ``rng_seed``: a training-mode layer gets a Generator seeded afresh on every forward, so
    every evaluation draws the same random mask. Returns (analytic, numeric) dicts keyed by
    parameter name and "x"; the gradient arrays handed to backward start as garbage, so a
    backward that adds to them instead of writing them is caught too."""
    rng = np.random.default_rng(seed)
    layer.build(tuple(in_shape))
    p = {name: rng.normal(0, 0.5, shape) for name, shape in layer.param_shapes().items()}
    x = rng.normal(0, 1, (m, *in_shape)) if x is None else np.array(x, np.float64)
    if nudge_from_zero:
        x = np.where(np.abs(x) < 0.05, 0.05, x)

    def forward(xx):
        return layer.forward(p, xx, train, np.random.default_rng(rng_seed) if rng_seed is not None else None)

    out, cache = forward(x)
    assert out.shape == (m, *layer.out_shape)
    R = rng.normal(0, 1, out.shape)
    g = {name: np.full(shape, 123.0) for name, shape in layer.param_shapes().items()}
    dx = layer.backward(p, cache, R, g, need_dx=True)
    analytic = {**g, "x": dx}

    def loss():
        return float((R * forward(x)[0]).sum())

    numeric = {}
    for name, arr in [*p.items(), ("x", x)]:
        num = np.zeros_like(arr)
        flat, nflat = arr.reshape(-1), num.reshape(-1)
        for k in range(flat.size):
            old = flat[k]
            flat[k] = old + EPS
            plus = loss()
            flat[k] = old - EPS
            minus = loss()
            flat[k] = old
            nflat[k] = (plus - minus) / (2 * EPS)
        numeric[name] = num
    return analytic, numeric


def assert_gradients_match(analytic, numeric, rtol=1e-6, atol=1e-8):
    assert set(analytic) == set(numeric)
    for name in numeric:
        assert analytic[name].shape == numeric[name].shape, name
        np.testing.assert_allclose(analytic[name], numeric[name], rtol=rtol, atol=atol, err_msg=name)


def test_dense_backward_matches_finite_differences():
    analytic, numeric = layer_gradcheck(Dense(4), (5,))
    assert_gradients_match(analytic, numeric)


def test_dense_skips_dx_for_the_first_layer_but_still_writes_its_gradients():
    layer = Dense(2)
    layer.build((3,))
    p = {"W": np.arange(6.0).reshape(2, 3), "b": np.zeros(2)}
    a = np.array([[1.0, 2.0, 3.0]])
    out, cache = layer.forward(p, a)
    assert out.tolist() == [[8.0, 26.0]]                   # z = W a + b by hand
    g = {"W": np.zeros((2, 3)), "b": np.zeros(2)}
    assert layer.backward(p, cache, np.array([[1.0, -1.0]]), g, need_dx=False) is None
    assert g["W"].tolist() == [[1, 2, 3], [-1, -2, -3]] and g["b"].tolist() == [1, -1]


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_activation_layer_backward_matches_finite_differences(name):
    analytic, numeric = layer_gradcheck(Activation(name), (6,), m=4, seed=1, nudge_from_zero=True)
    assert_gradients_match(analytic, numeric)


def test_activation_layer_on_feature_maps():
    """Hidden activations work element-wise on (m, C, H, W) maps (after a conv)."""
    analytic, numeric = layer_gradcheck(Activation("tanh"), (2, 3, 4), m=2)
    assert_gradients_match(analytic, numeric)


def test_flatten_backward_restores_the_map_shape():
    layer = Flatten()
    assert layer.build((2, 3, 4)) == (24,)
    analytic, numeric = layer_gradcheck(layer, (2, 3, 4), m=2)
    assert analytic["x"].shape == (2, 2, 3, 4)
    assert_gradients_match(analytic, numeric)


def test_dropout_in_eval_mode_is_the_identity():
    layer = Dropout(0.5)
    layer.build((10,))
    a = np.random.default_rng(0).normal(size=(4, 10))
    out, cache = layer.forward({}, a, train=False)
    assert np.array_equal(out, a)
    grad = np.ones_like(a)
    assert np.array_equal(layer.backward({}, cache, grad, {}), grad)
    analytic, numeric = layer_gradcheck(Dropout(0.5), (10,), train=False)
    assert_gradients_match(analytic, numeric)


def test_dropout_in_train_mode_with_a_fixed_mask():
    analytic, numeric = layer_gradcheck(Dropout(0.4), (12,), m=5, train=True, rng_seed=7)
    assert_gradients_match(analytic, numeric)
    assert (analytic["x"] == 0).any() and (analytic["x"] != 0).any()   # the mask really drops some


def test_dropout_drops_at_its_rate_and_keeps_the_expectation():
    layer = Dropout(0.3)
    layer.build((1000,))
    a = np.ones((20, 1000), np.float32)
    out, mask = layer.forward({}, a, train=True, rng=np.random.default_rng(0))
    kept = out != 0
    assert kept.mean() == pytest.approx(0.7, abs=0.01)
    np.testing.assert_allclose(out[kept], 1 / 0.7, rtol=1e-6)       # inverted dropout: scaled up in training
    assert out.mean() == pytest.approx(1.0, abs=0.02)
    again, _ = layer.forward({}, a, train=True, rng=np.random.default_rng(0))
    assert np.array_equal(out, again)                                # the Generator decides, nothing else
    zero = Dropout(0.0)
    zero.build((5,))
    assert np.array_equal(zero.forward({}, a[:, :5], train=True, rng=np.random.default_rng(0))[0], a[:, :5])


@pytest.mark.parametrize("config", [
    {"type": "dense", "units": 16}, {"type": "activation", "function": "tanh"}, {"type": "flatten"},
    {"type": "dropout", "rate": 0.25}, {"type": "conv", "filters": 8, "kernel": 3, "stride": 2, "padding": 1},
    {"type": "maxpool", "size": 3, "stride": 2},
])
def test_config_round_trip_through_the_registry(config):
    layer = layer_from_config(config)
    assert type(layer) is LAYERS[config["type"]]
    assert layer.config() == config
    assert layer_from_config(layer.config()).config() == config


@pytest.mark.parametrize("config, message", [
    ({"type": "lstm", "units": 4}, "unknown layer type 'lstm'"),
    ({"units": 4}, "must be an object with a 'type'"),
    ("dense", "must be an object with a 'type'"),
    ({"type": "dense", "units": 4, "bias": False}, "unknown setting 'bias'"),
    ({"type": "dense", "units": "4"}, "units must be int"),
    ({"type": "dense", "units": True}, "units must be int"),
    ({"type": "dense", "units": 4.0}, "units must be int"),
    ({"type": "dense", "units": 0}, "units must be int from 1 to 65536, got 0"),
    ({"type": "dense", "units": MAX_UNITS + 1}, "got 65537"),
    ({"type": "activation", "function": "swish"}, "function must be sigmoid, relu, tanh, softmax, got 'swish'"),
    ({"type": "dropout", "rate": 0.99}, "rate must be float from 0.0 to 0.95"),
    ({"type": "dropout", "rate": "0.5"}, "rate must be float"),
    ({"type": "conv", "filters": 8, "kernel": 0}, "kernel must be int from 1 to 64"),
    ({"type": "maxpool", "size": 2, "stride": -1}, "stride must be int from 1 to 64"),
])
def test_bad_configs_name_the_setting(config, message):
    with pytest.raises(ValueError, match=message):
        layer_from_config(config)


def test_dropout_rate_may_be_written_as_a_whole_number():
    assert layer_from_config({"type": "dropout", "rate": 0}).rate == 0.0


def test_dense_refuses_feature_maps():
    with pytest.raises(ValueError, match="needs a flat input"):
        Dense(4).build((1, 28, 28))
    with pytest.raises(ValueError, match="would output"):
        Flatten().build((8, 512, 512))
