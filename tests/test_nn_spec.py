"""digitnet.nn.spec: the --layers grammar, token by token; bad specs name the bad token;
architecture() adds the output layers and refuses what does not fit; describe_layers inverts."""

from __future__ import annotations

import pytest

from digitnet.errors import UsageError
from digitnet.nn.spec import architecture, describe_layers, parse_layers

RELU = {"type": "activation", "function": "relu"}
FLAT = {"type": "flatten"}


def conv(f, k, s=1, p=0):
    return {"type": "conv", "filters": f, "kernel": k, "stride": s, "padding": p}


def configs(text, activation="relu"):
    return [layer.config() for layer in parse_layers(text, activation)]


@pytest.mark.parametrize("text, expected", [
    ("dense256", [FLAT, {"type": "dense", "units": 256}, RELU]),
    ("256", [FLAT, {"type": "dense", "units": 256}, RELU]),
    ("dense16:tanh", [FLAT, {"type": "dense", "units": 16}, {"type": "activation", "function": "tanh"}]),
    ("dense16:linear", [FLAT, {"type": "dense", "units": 16}]),
    ("conv32x5", [conv(32, 5), RELU]),
    ("conv8x3s2", [conv(8, 3, s=2), RELU]),
    ("conv8x3p1", [conv(8, 3, p=1), RELU]),
    ("conv8x3s2p1:sigmoid", [conv(8, 3, 2, 1), {"type": "activation", "function": "sigmoid"}]),
    ("conv8x5same", [conv(8, 5, p=2), RELU]),
    ("conv8x4same", [conv(8, 4, p=1), RELU]),
    ("conv8x3:linear", [conv(8, 3)]),
    ("pool2", [{"type": "maxpool", "size": 2, "stride": 2}]),
    ("maxpool3s2", [{"type": "maxpool", "size": 3, "stride": 2}]),
    ("dropout0.5", [{"type": "dropout", "rate": 0.5}]),
    ("dropout.25", [{"type": "dropout", "rate": 0.25}]),
    ("flatten,dense8", [FLAT, {"type": "dense", "units": 8}, RELU]),
    (" Conv4x3 , POOL2 ,dense8", [conv(4, 3), RELU, {"type": "maxpool", "size": 2, "stride": 2}, FLAT,
                                  {"type": "dense", "units": 8}, RELU]),
    ("conv32x5,pool2,conv64x5,pool2,dense256,dropout0.5",
     [conv(32, 5), RELU, {"type": "maxpool", "size": 2, "stride": 2}, conv(64, 5), RELU,
      {"type": "maxpool", "size": 2, "stride": 2}, FLAT, {"type": "dense", "units": 256}, RELU,
      {"type": "dropout", "rate": 0.5}]),
    ("dense16,flatten,dense8", [FLAT, {"type": "dense", "units": 16}, RELU, {"type": "dense", "units": 8}, RELU]),
])
def test_good_tokens_become_layer_configs(text, expected):
    assert configs(text) == expected


def test_the_default_activation_applies_to_dense_and_conv_only():
    assert configs("conv4x3,pool2,dense8,dropout0.1", "tanh") == [
        conv(4, 3), {"type": "activation", "function": "tanh"}, {"type": "maxpool", "size": 2, "stride": 2}, FLAT,
        {"type": "dense", "units": 8}, {"type": "activation", "function": "tanh"}, {"type": "dropout", "rate": 0.1}]


@pytest.mark.parametrize("text, words", [
    ("conv32x5,lstm64", ["'lstm64' is not a layer"]),
    ("dense16,conv8x3", ["'conv8x3'", "after a dense layer"]),
    ("dense16,pool2", ["'pool2'", "after a dense layer"]),
    ("flatten,conv8x3", ["'conv8x3'", "after a dense layer"]),
    ("dense16:swish", ["'dense16:swish'", "unknown activation 'swish'", "sigmoid, relu, tanh, linear"]),
    ("conv8x3:softmax", ["'conv8x3:softmax'", "unknown activation 'softmax'"]),
    ("dense16,,dense8", ["empty token"]),
    ("dense16,", ["empty token"]),
    ("", ["--layers is empty"]),
    (" , ", ["--layers is empty"]),
    ("dense0", ["'dense0'", "units must be int from 1 to 65536, got 0"]),
    ("dense70000", ["'dense70000'", "got 70000"]),
    ("conv0x3", ["'conv0x3'", "filters"]),
    ("conv8x3s0", ["'conv8x3s0'", "stride"]),
    ("pool0", ["'pool0'", "size"]),
    ("dropout1.5", ["'dropout1.5'", "rate must be float from 0.0 to 0.95, got 1.5"]),
    ("conv8", ["'conv8' is not a layer"]),
    ("dense-4", ["'dense-4' is not a layer"]),
])
def test_bad_specs_name_the_bad_token(text, words):
    with pytest.raises(UsageError) as e:
        parse_layers(text, "relu")
    message = str(e.value)
    assert message.startswith("--layers") and "\n" not in message
    for w in words:
        assert w in message, message


@pytest.mark.parametrize("text, shape, words", [
    ("conv8x40", (1, 28, 28), ["conv8x40", "a 40×40 kernel does not fit 28×28 maps"]),
    ("conv8x5,pool2,conv8x5,pool2,conv8x5", (1, 28, 28), ["conv8x5", "a 5×5 kernel does not fit 4×4 maps"]),
    ("pool2,pool2,pool2,pool2,pool2", (1, 28, 28), ["pool2", "a 2×2 window does not fit 1×1 maps"]),
    ("conv8x5", (1, 4, 4), ["conv8x5", "does not fit 4×4"]),
])
def test_layers_that_do_not_fit_the_input_are_usage_errors(text, shape, words):
    with pytest.raises(UsageError) as e:
        architecture(parse_layers(text), shape, 10, "softmax")
    for w in words:
        assert w in str(e.value), str(e.value)


def test_architecture_adds_the_output_layers_and_builds_them():
    layers = architecture(parse_layers("conv4x5,pool2"), (1, 28, 28), 10, "softmax")
    assert [l.config() for l in layers][-3:] == [FLAT, {"type": "dense", "units": 10},
                                                 {"type": "activation", "function": "softmax"}]
    assert layers[-2].in_shape == (4 * 12 * 12,) and layers[-1].out_shape == (10,)
    dense = architecture(parse_layers("dense16"), (1, 28, 28), 3, "sigmoid")
    assert [l.config()["type"] for l in dense] == ["flatten", "dense", "activation", "dense", "activation"]
    assert dense[-1].function == "sigmoid" and dense[-2].units == 3
    with pytest.raises(UsageError, match="'relu' cannot be an output activation"):
        architecture(parse_layers("dense16"), (1, 28, 28), 10, "relu")


@pytest.mark.parametrize("text, canonical", [
    ("conv32x5,pool2,conv64x5,pool2,dense256,dropout0.5", "conv32x5:relu,pool2,conv64x5:relu,pool2,dense256:relu,dropout0.5"),
    ("conv8x3s2p1:tanh,maxpool3s2,128:linear", "conv8x3s2p1:tanh,pool3s2,dense128:linear"),
    ("conv8x5same,pool2", "conv8x5p2:relu,pool2"),
    ("flatten,16,16", "dense16:relu,dense16:relu"),
])
def test_describe_layers_inverts_parse_layers(text, canonical):
    layers = architecture(parse_layers(text), (1, 28, 28), 10, "softmax")
    assert describe_layers(layers) == canonical
    again = architecture(parse_layers(canonical, "sigmoid"), (1, 28, 28), 10, "softmax")   # activations written out
    assert [l.config() for l in again] == [l.config() for l in layers]
