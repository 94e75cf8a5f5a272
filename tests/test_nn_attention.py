"""digitnet.nn.attention: each piece (linear, LayerNorm, attention, GELU) and each layer (patch
embedding, transformer block, class-token read-out) against central finite differences in
float64 and against plain-loop definitions; the whole vision transformer's chain rule; the
spec tokens; configs and the model file; the schedule and preset; a tiny ViT that learns."""

from __future__ import annotations

import math

import numpy as np
import pytest

from test_nn_layers import assert_gradients_match, layer_gradcheck
from test_nn_network import float64_net, numeric_gradient, numeric_input_gradient

from digitnet.errors import UsageError
from digitnet.nn import attention as A
from digitnet.nn.attention import Block, ClassToken, PatchEmbed, attention_maps, network_attention
from digitnet.nn.layers import LAYERS, Activation, Dense, Dropout, layer_from_config
from digitnet.nn.spec import architecture, describe_layers, parse_layers

EPS = 1e-6


def numeric_grads(f, args, R):
    """Central differences of Σ R ⊙ f(*args) with respect to each array in ``args`` (float64)."""
    out = []
    for arr in args:
        num = np.zeros_like(arr)
        flat, nflat = arr.reshape(-1), num.reshape(-1)
        for k in range(flat.size):
            old = flat[k]
            flat[k] = old + EPS
            plus = float((R * f(*args)).sum())
            flat[k] = old - EPS
            minus = float((R * f(*args)).sum())
            flat[k] = old
            nflat[k] = (plus - minus) / (2 * EPS)
        out.append(num)
    return out


# --- the pieces ------------------------------------------------------------------------------
def test_linear_backward_matches_finite_differences():
    rng = np.random.default_rng(0)
    x, W, b = rng.normal(size=(2, 3, 4)), rng.normal(size=(5, 4)), rng.normal(size=5)
    R = rng.normal(size=(2, 3, 5))
    dx, dW, db = A.linear_backward(R, x, W)
    for got, want in zip((dx, dW, db), numeric_grads(A.linear_forward, (x, W, b), R)):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-8)


def test_layernorm_forward_by_hand_and_backward_by_finite_differences():
    x = np.array([[1.0, 2.0, 3.0, 6.0]])
    out, _ = A.layernorm_forward(x, np.ones(4), np.zeros(4))
    # mean 3, variance (4 + 1 + 0 + 9)/4 = 3.5
    np.testing.assert_allclose(out, (x - 3) / np.sqrt(3.5 + A.LN_EPS))
    rng = np.random.default_rng(1)
    x, gamma, beta = rng.normal(size=(2, 3, 6)), rng.normal(size=6), rng.normal(size=6)
    R = rng.normal(size=(2, 3, 6))
    _, cache = A.layernorm_forward(x, gamma, beta)
    got = A.layernorm_backward(R, cache, gamma)
    want = numeric_grads(lambda *a: A.layernorm_forward(*a)[0], (x, gamma, beta), R)
    for g, w, name in zip(got, want, ("x", "gamma", "beta")):
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-8, err_msg=name)


def attention_by_loops(qkv, heads):
    """The definition, one query at a time: head h of token i takes Σ_j w_j v_j (h's slice),
    w = softmax_j(q_i · k_j / √d)."""
    m, T, D3 = qkv.shape
    D = D3 // 3
    d = D // heads
    y = np.zeros((m, T, D))
    att = np.zeros((m, heads, T, T))
    for n in range(m):
        for h in range(heads):
            sl = slice(h * d, (h + 1) * d)
            q, k, v = qkv[n, :, sl], qkv[n, :, D:][:, sl], qkv[n, :, 2 * D:][:, sl]
            for i in range(T):
                s = np.array([q[i] @ k[j] for j in range(T)]) / math.sqrt(d)
                w = np.exp(s - s.max())
                w /= w.sum()
                att[n, h, i] = w
                y[n, i, sl] = w @ v
    return y, att


def test_attention_forward_matches_the_definition():
    qkv = np.random.default_rng(2).normal(size=(2, 5, 3 * 6))
    y, (_, _, _, att) = A.attention_forward(qkv, heads=3)
    y_ref, att_ref = attention_by_loops(qkv, 3)
    np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(att, att_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(att.sum(axis=-1), 1.0)


@pytest.mark.parametrize("heads", [1, 2, 4])
def test_attention_backward_matches_finite_differences(heads):
    rng = np.random.default_rng(heads)
    qkv = rng.normal(size=(2, 5, 3 * 8))
    R = rng.normal(size=(2, 5, 8))
    _, cache = A.attention_forward(qkv, heads)
    got = A.attention_backward(R, cache)
    (want,) = numeric_grads(lambda a: A.attention_forward(a, heads)[0], (qkv,), R)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-8)


def test_gelu_values_and_backward():
    # the tanh approximation stays within 1e-3 of the exact x Φ(x)
    for v in (-3.0, -1.0, -0.3, 0.0, 0.5, 1.0, 2.5):
        exact = v * 0.5 * (1 + math.erf(v / math.sqrt(2)))
        assert A.gelu_forward(np.array(v)) == pytest.approx(exact, abs=1e-3)
    h = np.random.default_rng(3).normal(0, 2, size=(3, 7))
    R = np.random.default_rng(4).normal(size=h.shape)
    (want,) = numeric_grads(A.gelu_forward, (h,), R)
    np.testing.assert_allclose(A.gelu_backward(R, h), want, rtol=1e-6, atol=1e-8)


# --- the layers ------------------------------------------------------------------------------
def test_patch_embed_forward_matches_the_definition():
    layer = PatchEmbed(2, 3)
    assert layer.build((2, 4, 6)) == (7, 3)                  # 2 × 3 patches and the class token
    rng = np.random.default_rng(5)
    p = {name: rng.normal(size=shape) for name, shape in layer.param_shapes().items()}
    x = rng.normal(size=(2, 2, 4, 6))
    out, _ = layer.forward(p, x)
    for n in range(2):
        np.testing.assert_allclose(out[n, 0], p["cls"] + p["pos"][0])
        for i in range(2):
            for j in range(3):                                # patch (i, j) is token 1 + 3 i + j
                patch = x[n, :, 2 * i:2 * i + 2, 2 * j:2 * j + 2]
                want = np.array([(p["W"][f] * patch).sum() for f in range(3)]) + p["b"] + p["pos"][1 + 3 * i + j]
                np.testing.assert_allclose(out[n, 1 + 3 * i + j], want)


def test_patch_embed_backward_matches_finite_differences():
    analytic, numeric = layer_gradcheck(PatchEmbed(2, 3), (2, 4, 6), m=2)
    assert_gradients_match(analytic, numeric)


@pytest.mark.parametrize("heads, mlp", [(1, 4), (2, 2), (4, 1)])
def test_block_backward_matches_finite_differences(heads, mlp):
    analytic, numeric = layer_gradcheck(Block(heads, 8, mlp), (5, 8), m=2, seed=heads)
    assert_gradients_match(analytic, numeric)


def test_block_forward_is_two_residuals_of_the_pieces():
    """out = x1 + MLP(LN2(x1)), x1 = x + MHSA(LN1(x)), written out independently of Block."""
    layer = Block(2, 4, 2)
    layer.build((3, 4))
    rng = np.random.default_rng(6)
    p = {name: rng.normal(size=shape) for name, shape in layer.param_shapes().items()}
    x = rng.normal(size=(2, 3, 4))

    def ln(u, g, b):
        return (u - u.mean(-1, keepdims=True)) / np.sqrt(u.var(-1, keepdims=True) + 1e-5) * g + b

    y, _ = attention_by_loops(ln(x, p["ln1_gamma"], p["ln1_beta"]) @ p["W_qkv"].T + p["b_qkv"], 2)
    x1 = x + y @ p["W_o"].T + p["b_o"]
    h = ln(x1, p["ln2_gamma"], p["ln2_beta"]) @ p["W_1"].T + p["b_1"]
    gelu = 0.5 * h * (1 + np.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h ** 3)))
    np.testing.assert_allclose(layer.forward(p, x)[0], x1 + gelu @ p["W_2"].T + p["b_2"], rtol=1e-10)


def test_block_backward_without_dx_still_writes_its_gradients():
    layer = Block(2, 4)
    layer.build((3, 4))
    rng = np.random.default_rng(7)
    p = {name: rng.normal(size=shape) for name, shape in layer.param_shapes().items()}
    out, cache = layer.forward(p, rng.normal(size=(2, 3, 4)))
    R = rng.normal(size=out.shape)
    g1 = {name: np.zeros(shape) for name, shape in layer.param_shapes().items()}
    g2 = {name: np.zeros(shape) for name, shape in layer.param_shapes().items()}
    layer.backward(p, cache, R, g1, need_dx=True)
    assert layer.backward(p, cache, R, g2, need_dx=False) is None
    for name in g1:
        assert np.array_equal(g1[name], g2[name]), name


def test_class_token_reads_token_zero_through_a_layernorm():
    analytic, numeric = layer_gradcheck(ClassToken(), (4, 6), m=3)
    assert_gradients_match(analytic, numeric)
    assert not analytic["x"][:, 1:].any() and analytic["x"][:, 0].any()


def test_attention_maps_are_the_blocks_own_probabilities():
    layer = Block(2, 4)
    layer.build((5, 4))
    rng = np.random.default_rng(8)
    p = {name: rng.normal(size=shape) for name, shape in layer.param_shapes().items()}
    x = rng.normal(size=(3, 5, 4))
    maps = attention_maps(layer, p, x)
    assert maps.shape == (3, 2, 5, 5)
    np.testing.assert_allclose(maps.sum(axis=-1), 1.0)
    _, cache = layer.forward(p, x)
    np.testing.assert_array_equal(maps, cache[2][3])


def test_layers_are_registered_and_configs_round_trip():
    for layer in (PatchEmbed(7, 64), Block(4, 64), Block(2, 32, 2), ClassToken()):
        assert LAYERS[layer.type] is type(layer)
        again = layer_from_config(layer.config())
        assert again.config() == layer.config() and again.describe() == layer.describe()
    assert Block(4, 64).config() == {"type": "block", "heads": 4, "dim": 64, "mlp": 4}
    with pytest.raises(ValueError, match="heads"):
        layer_from_config({"type": "block", "heads": 0, "dim": 64, "mlp": 4})
    with pytest.raises(ValueError, match="unknown setting"):
        layer_from_config({"type": "patch", "patch": 7, "dim": 64, "stride": 2})


def test_layers_refuse_shapes_they_cannot_take():
    with pytest.raises(ValueError, match="do not tile"):
        PatchEmbed(5, 8).build((1, 28, 28))
    with pytest.raises(ValueError, match="needs tokens"):
        Block(2, 8).build((1, 28, 28))
    with pytest.raises(ValueError, match="do not divide"):
        Block(3, 8).build((17, 8))
    with pytest.raises(ValueError, match="8-wide"):
        Block(2, 8).build((17, 16))


# --- the spec grammar ----------------------------------------------------------------------
@pytest.mark.parametrize("text, layers, described", [
    ("patch7x64,block4,block4x64,block4m2",
     ["patch7x64", "block4x64", "block4x64", "block4x64m2", "cls"], "patch7x64,block4x64,block4x64,block4x64m2"),
    ("patch4x32,block2,dense128", ["patch4x32", "block2x32", "cls", "dense128", "relu"],
     "patch4x32,block2x32,dense128:relu"),
    ("patch14x16,block1,cls,dropout0.1", ["patch14x16", "block1x16", "cls", "dropout0.1"],
     "patch14x16,block1x16,cls,dropout0.1"),
    ("patch7x64,dropout0.1,block4", ["patch7x64", "dropout0.1", "block4x64", "cls"], "patch7x64,dropout0.1,block4x64"),
    ("PATCH7X8, cls", ["patch7x8", "cls"], "patch7x8"),
])
def test_spec_tokens(text, layers, described):
    hidden = parse_layers(text)
    assert [l.describe() for l in hidden] == layers
    full = architecture(hidden, (1, 28, 28), 10, "softmax")
    assert isinstance(full[-2], Dense) and isinstance(full[-1], Activation)
    assert describe_layers(full) == described
    again = architecture(parse_layers(described), (1, 28, 28), 10, "softmax")   # the round trip
    assert [l.config() for l in again] == [l.config() for l in full]


@pytest.mark.parametrize("text, message", [
    ("block4", "put a patch embedding"),
    ("patch7x64,conv3x3", "need feature maps"),
    ("conv8x3,patch7x64", "must come first"),
    ("patch7x64,patch7x64", "must come first"),
    ("patch5x64", "do not tile"),
    ("patch7x64,block5", "do not divide"),
    ("patch7x64,block4x32", "32-wide"),
    ("cls", "put a patch embedding"),
    ("patch7x64,flatten", "read out by cls"),
    ("patch7x64:relu", "not a layer"),
    ("patch7x0", "dim must be"),
    ("patch7x64,block4m0", "mlp must be"),
    ("patch7x64,dense32,block4", "put a patch embedding"),
])
def test_spec_refuses_bad_transformer_tokens(text, message):
    with pytest.raises(UsageError, match=message):
        architecture(parse_layers(text), (1, 28, 28), 10, "softmax")


# --- the whole network -----------------------------------------------------------------------
def tiny_vit(cost="cross-entropy", output="softmax", extra=()):
    layers = [PatchEmbed(2, 4), Block(2, 4, 2), *extra, Block(1, 4, 1), ClassToken(), Dense(3), Activation(output)]
    return float64_net(layers, (1, 4, 6), cost)


@pytest.mark.parametrize("cost, output", [("cross-entropy", "softmax"), ("quadratic", "sigmoid")])
def test_vision_transformer_backprop_matches_finite_differences(cost, output):
    net = tiny_vit(cost, output)
    rng = np.random.default_rng(9)
    x = rng.random((3, 24))
    labels = np.array([0, 2, 1])
    _, analytic, _ = net.cost_and_gradient(x, labels)
    np.testing.assert_allclose(analytic, numeric_gradient(net, x, labels), rtol=1e-5, atol=1e-8)


def test_vision_transformer_with_dropout_between_blocks_in_training():
    net = tiny_vit(extra=[Dropout(0.3)])
    x = np.random.default_rng(10).random((3, 24))
    labels = np.array([1, 0, 2])
    _, analytic, _ = net.cost_and_gradient(x, labels, True, np.random.default_rng(5))
    np.testing.assert_allclose(analytic, numeric_gradient(net, x, labels, train=True, rng_seed=5),
                               rtol=1e-5, atol=1e-8)


def test_vision_transformer_input_gradient_matches_finite_differences():
    net = tiny_vit()
    x = np.random.default_rng(11).random((2, 24))
    targets = np.array([2, 0])
    _, dx = net.input_gradient(x, targets)
    np.testing.assert_allclose(dx, numeric_input_gradient(net, x, targets), rtol=1e-5, atol=1e-8)


def test_network_attention_gives_every_blocks_maps():
    net = tiny_vit()
    x = np.random.default_rng(12).random((2, 24))
    maps = network_attention(net, x)
    assert [m.shape for m in maps] == [(2, 2, 7, 7), (2, 1, 7, 7)]
    a1 = net.feedforward(x)[1]                               # the first block's input
    np.testing.assert_array_equal(maps[0], attention_maps(net.layers[1], net.views[1], a1))


def test_a_vision_transformer_model_file_round_trip(tmp_path):
    from digitnet.modelfile import Model, load_model, save_model

    layers = architecture(parse_layers("patch7x16,block2,block2"), (1, 28, 28), 10, "softmax")
    from digitnet.nn.network import Network

    net = Network.init(layers, (1, 28, 28), seed=1)
    model = Model(net, [str(i) for i in range(10)], (28, 28), "mnist", {}, [], {"name": "t"}, {})
    path = save_model(model, tmp_path / "vit.npz")
    again = load_model(path).network
    assert [l.config() for l in again.layers] == [l.config() for l in net.layers]
    x = np.random.default_rng(13).random((4, 784)).astype(np.float32)
    np.testing.assert_array_equal(again.predict_proba(x), net.predict_proba(x))


def test_init_is_seeded_and_scaled():
    from digitnet.nn.network import Network

    layers = architecture(parse_layers("patch7x64,block4"), (1, 28, 28), 10, "softmax")
    a, b = Network.init(layers, (1, 28, 28), seed=3), Network.init(layers, (1, 28, 28), seed=3)
    assert np.array_equal(a.params, b.params)
    p = a.views[1]
    assert np.all(p["ln1_gamma"] == 1) and np.all(p["ln1_beta"] == 0) and np.all(p["b_qkv"] == 0)
    assert p["W_1"].std() == pytest.approx(math.sqrt(2 / (64 + 256)), rel=0.05)
    assert 0.01 < a.views[0]["pos"].std() < 0.03


# --- training --------------------------------------------------------------------------------
def test_warmup_cosine_schedule():
    from digitnet.training import SCHEDULES

    f = SCHEDULES["warmup-cosine"]
    assert [f(e, 40) for e in range(3)] == [1 / 3, 2 / 3, 1.0]                 # two warm-up epochs
    after = [f(e, 40) for e in range(2, 40)]
    assert all(x > y for x, y in zip(after, after[1:])) and 0 < after[-1] < 0.01
    assert f(20, 40) == pytest.approx(0.5 * (1 + math.cos(math.pi * 18 / 38)))
    assert f(0, 1) == 1.0 and [f(e, 2) for e in range(2)] == [0.5, 1.0]


def test_attention_preset_is_a_vision_transformer_trained_with_adam():
    from digitnet.training import PRESETS

    cfg = PRESETS["attention"].validate()
    assert (cfg.optimizer, cfg.schedule) == ("adam", "warmup-cosine")
    net = cfg.build((28, 28), 10)
    assert [l.describe() for l in net.layers] == ["patch7x64", *["block4x64"] * 4, "cls", "dense10", "softmax"]
    assert net.shapes[1] == (17, 64)


def test_a_tiny_vision_transformer_learns(embedded):
    from digitnet.datasets import make_dataset
    from digitnet.metrics import loss_and_accuracy
    from digitnet.nn.functions import to_unit_float
    from digitnet.training import resolve_config, train

    data = make_dataset("tiny", embedded.train_images[:600], embedded.train_labels[:600],
                        embedded.test_images[:300], embedded.test_labels[:300])
    cfg = resolve_config("attention", layers="patch7x32,block4,block4", epochs=6, lr=3e-3, batch_size=32,
                         augment=False)
    result = train(data, cfg)
    assert result.history[-1]["loss"] < 0.6 * result.history[0]["loss"]
    x = to_unit_float(data.test_images).reshape(300, -1)
    assert loss_and_accuracy(result.network, x, data.test_labels)[1] > 0.5      # chance is 0.1
