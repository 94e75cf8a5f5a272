"""digitnet.analysis: the input gradient against finite differences (dense and conv stacks),
dreaming, noise, confident mistakes, neuron selection, parameter counts per layer, the forward
pass stage by stage against a loop-by-loop convolution, and atomic PNG writing."""

from __future__ import annotations

import numpy as np
import pytest

from digitnet import analysis
from digitnet.errors import UsageError
from digitnet.modelfile import Model, load_model
from digitnet.nn.functions import COSTS
from digitnet.nn.network import Network, dense_layers
from digitnet.training import TrainConfig

CONV_SPEC = "conv4x3,pool2,dense8"


def small_model(activation="sigmoid", cost="quadratic", sizes=(784, 12, 8, 10), seed=0) -> Model:
    """An untrained dense model with seeded weights: enough for shapes, gradients and determinism."""
    net = Network.init(dense_layers(sizes, activation, COSTS[cost].output), (1, 28, 28), cost, seed=seed)
    net.views[1]["b"][...] = np.random.default_rng(seed + 1).normal(0, 0.3, sizes[1])   # layer 1: the first dense
    return Model(net, tuple(str(i) for i in range(sizes[-1])), (28, 28))


def conv_model(spec=CONV_SPEC, seed=0) -> Model:
    """An untrained conv model built as training builds it: conv 4×3×3, relu, 2×2 pool, dense 8, relu, dense 10, softmax."""
    net = TrainConfig(layers=spec, seed=seed).build((28, 28), 10)
    net.params += np.random.default_rng(seed + 1).normal(0, 0.05, net.params.shape).astype(np.float32)  # non-zero biases
    return Model(net, tuple(str(i) for i in range(10)), (28, 28))


@pytest.mark.parametrize("activation,cost", [("sigmoid", "quadratic"), ("relu", "cross-entropy"), ("tanh", "cross-entropy")])
def test_input_gradient_matches_central_differences(activation, cost):
    net = Network.init(dense_layers((20, 7, 5, 4), activation, COSTS[cost].output), (1, 4, 5), cost, seed=3).astype(np.float64)
    _check_input_gradient(net, np.random.default_rng(4).random((3, 20)), np.array([0, 2, 3]))


@pytest.mark.parametrize("spec", ["conv3x3,pool2,dense6", "conv2x3p1:tanh,conv3x3s2,dense5:sigmoid"])
def test_input_gradient_of_a_conv_stack_matches_central_differences(spec):
    """dream climbs this gradient on any stack: conv, pooling and strides included."""
    net = TrainConfig(layers=spec, seed=5).build((8, 8), 4).astype(np.float64)
    net.params += np.random.default_rng(6).normal(0, 0.1, net.params.shape)
    _check_input_gradient(net, np.random.default_rng(7).random((2, 64)), np.array([1, 3]))


def _check_input_gradient(net, x, targets):
    a_L, grad = net.input_gradient(x, targets)
    assert np.allclose(a_L, net.feedforward(x)[-1])

    def objective(xs):  # ln a_L[target] of each row
        return np.log(net.feedforward(xs)[-1][np.arange(len(xs)), targets])

    eps = 1e-6
    numeric = np.empty_like(x)
    for j in range(x.shape[1]):
        step = np.zeros_like(x)
        step[:, j] = eps
        numeric[:, j] = (objective(x + step) - objective(x - step)) / (2 * eps)
    assert grad.shape == x.shape
    assert np.allclose(grad, numeric, rtol=1e-5, atol=1e-7)


def test_dream_fools_a_trained_model(tiny_model):
    m = load_model(tiny_model)
    for digit in (3, 8):
        d = analysis.dream(m, digit, steps=150)
        assert d.probability >= 0.9
        assert d.probability > d.start_probability
        assert d.predicted == digit
        assert d.image.shape == (28, 28) and d.image.min() >= 0 and d.image.max() <= 1
        assert len(d.trace) == 151 and d.trace[-1] == pytest.approx(d.probability)


def test_dream_raises_the_target_on_a_sigmoid_network():
    m = small_model()      # untrained: its last layer cannot reach 0.9, but ascent must still climb
    for digit in (0, 5):
        d = analysis.dream(m, digit, steps=60, restarts=2)
        assert d.probability > d.start_probability
        assert d.probability >= d.trace.max() - 0.05


def test_dream_is_deterministic_and_seeded():
    m = small_model("relu", "cross-entropy")
    a = analysis.dream(m, 2, steps=20, seed=7)
    b = analysis.dream(m, 2, steps=20, seed=7)
    c = analysis.dream(m, 2, steps=20, seed=8, restarts=3)
    assert np.array_equal(a.image, b.image) and a.probability == b.probability
    starts7, starts8 = analysis.dream_starts(28, 28, 3, 7), analysis.dream_starts(28, 28, 3, 8)
    assert np.array_equal(starts7[0], starts8[0])       # the black start does not depend on the seed
    assert not np.array_equal(starts7[2], starts8[2])
    assert c.image.shape == (28, 28)


def test_dream_l2_penalty_keeps_pixels_nearer_grey():
    m = small_model("relu", "cross-entropy")
    free = analysis.dream(m, 1, steps=80, restarts=1, start=np.full((28, 28), 0.5))
    held = analysis.dream(m, 1, steps=80, restarts=1, start=np.full((28, 28), 0.5), l2=5.0)
    assert np.abs(held.image - 0.5).mean() < np.abs(free.image - 0.5).mean()


@pytest.mark.parametrize("kwargs", [dict(digit=10), dict(digit=-1), dict(digit=1, steps=-1), dict(digit=1, step_size=0),
                                    dict(digit=1, l2=-1.0), dict(digit=1, restarts=0)])
def test_dream_rejects_bad_options(kwargs):
    with pytest.raises(UsageError):
        analysis.dream(small_model(), **kwargs)


def test_noise_experiment_counts_and_confidence():
    m = small_model("relu", "cross-entropy")
    rep = analysis.noise_experiment(m, samples=300, seed=1, keep=3)
    assert rep.class_counts.sum() == 300 and rep.images.shape == (3, 28, 28)
    assert 0 <= rep.images.min() and rep.images.max() <= 1
    probs = m.predict_proba(np.random.default_rng(1).random((300, 784), dtype=np.float32))
    assert np.array_equal(rep.predicted, probs.argmax(axis=1))
    assert rep.mean_confidence == pytest.approx(float(probs.max(axis=1).mean()), rel=1e-6)
    js = rep.to_json(m.class_names)
    assert {"samples", "mean_confidence", "class_counts"} <= set(js)
    assert sum(js["class_counts"].values()) == 300 and js["samples"] == 300
    again = analysis.noise_experiment(m, samples=300, seed=1, keep=3)
    other = analysis.noise_experiment(m, samples=300, seed=2, keep=3)
    assert np.array_equal(rep.predicted, again.predicted)
    assert not np.array_equal(rep.images, other.images)
    with pytest.raises(UsageError):
        analysis.noise_experiment(m, samples=0)


def test_confident_errors_are_the_wrong_ones_most_confident_first(embedded):
    m = small_model("relu", "cross-entropy")
    images, labels = embedded.test_images[:400], embedded.test_labels[:400]
    mk = analysis.confident_errors(m, images, labels, limit=10)
    probs = m.predict_proba(images.reshape(400, -1) / 255.0)
    predicted, conf = probs.argmax(axis=1), probs.max(axis=1)
    wrong = predicted != labels
    assert mk.n == 400 and mk.n_wrong == int(wrong.sum())
    assert len(mk.index) == min(10, mk.n_wrong)
    assert np.all(mk.predicted != mk.true) and np.array_equal(mk.true, labels[mk.index])
    assert np.all(np.diff(mk.confidence) <= 0)
    # nothing wrong left out was more confident than the last one shown
    rest = np.setdiff1d(np.flatnonzero(wrong), mk.index)
    assert rest.size == 0 or conf[rest].max() <= mk.confidence[-1] + 1e-7
    assert np.array_equal(mk.images, images[mk.index])
    js = mk.to_json(m.class_names)
    assert js["errors"] == mk.n_wrong and len(js["mistakes"]) == len(mk.index)


def test_parse_neurons():
    assert analysis.parse_neurons("0:4", 16).tolist() == [0, 1, 2, 3]
    assert analysis.parse_neurons("12:", 16).tolist() == [12, 13, 14, 15]
    assert analysis.parse_neurons("0:99", 16).tolist() == list(range(16))
    assert analysis.parse_neurons(":", 3).tolist() == [0, 1, 2]
    assert analysis.parse_neurons("5,1,5", 16).tolist() == [1, 5]
    for bad in ("a:b", "16", "3:3", "x", "-1"):
        with pytest.raises(UsageError):
            analysis.parse_neurons(bad, 16)


def test_parse_neurons_names_the_option():
    with pytest.raises(UsageError, match=r"^--maps '9': this layer has maps 0 to 3$"):
        analysis.parse_neurons("9", 4, "--maps", "maps")


def test_parameter_counts_and_layer_weights_of_a_dense_stack():
    m = small_model()
    rows = analysis.parameter_counts(m.network)
    assert [(r["name"], r["type"]) for r in rows] == [("flatten", "flatten"), ("dense12", "dense"), ("sigmoid", "activation"),
                                                      ("dense8", "dense"), ("sigmoid", "activation"), ("dense10", "dense"),
                                                      ("sigmoid", "activation")]
    assert [r["layer"] for r in rows] == list(range(1, 8))
    assert [r["parameters"] for r in rows] == [0, 784 * 12 + 12, 0, 12 * 8 + 8, 0, 8 * 10 + 10, 0]
    assert [r["weight_layer"] for r in rows] == [None, 1, None, 2, None, 3, None]
    assert rows[3]["arrays"] == {"W": [8, 12], "b": [8]} and rows[0]["arrays"] == {}
    assert rows[0]["input_shape"] == [1, 28, 28] and rows[0]["output_shape"] == [784]
    assert analysis.layer_weights(m.network, 2).shape == (8, 12)
    assert analysis.layer_weights(m.network, 2) is m.network.views[3]["W"]
    for bad in (0, 4):
        with pytest.raises(UsageError, match="weight layers 1 to 3"):
            analysis.layer_weights(m.network, bad)


def test_parameter_counts_and_layer_weights_of_a_conv_stack():
    net = conv_model().network
    rows = analysis.parameter_counts(net)
    # by hand: conv 4 filters of 1×3×3 on 28×28 -> 4×26×26, pool -> 4×13×13 = 676, dense 8, dense 10
    expected = [("conv4x3", [4, 26, 26], 4 * 9, 4, 1), ("relu", [4, 26, 26], 0, 0, None), ("pool2", [4, 13, 13], 0, 0, None),
                ("flatten", [676], 0, 0, None), ("dense8", [8], 676 * 8, 8, 2), ("relu", [8], 0, 0, None),
                ("dense10", [10], 80, 10, 3), ("softmax", [10], 0, 0, None)]
    assert [(r["name"], r["output_shape"], r["weights"], r["biases"], r["weight_layer"]) for r in rows] == expected
    assert rows[0]["arrays"] == {"W": [4, 1, 3, 3], "b": [4]}
    assert sum(r["parameters"] for r in rows) == 36 + 4 + 5408 + 8 + 80 + 10 == net.n_params
    assert analysis.layer_weights(net, 1).shape == (4, 1, 3, 3)
    assert analysis.layer_weights(net, 2).shape == (8, 676)
    assert analysis.weight_layer_index(net, 3) == 6


def test_feeds_looks_back_through_flatten_and_activations():
    conv = conv_model().network
    assert analysis.feeds(conv, 0) == ("input", (1, 28, 28))
    assert analysis.feeds(conv, 4) == ("pool2", (4, 13, 13))          # dense8 reads the pooled maps, flattened
    dense = small_model().network
    assert analysis.feeds(dense, 1) == ("input", (1, 28, 28))
    assert analysis.feeds(dense, 3) == ("dense12", (12,))


def _loop_conv_relu_pool(image, W, b):
    """conv (valid, stride 1) + relu + 2×2 max pool of one image, by explicit loops: the
    textbook definition, independent of the im2col code."""
    F, _, k, _ = W.shape
    n = image.shape[0] - k + 1
    z = np.empty((F, n, n))
    for f in range(F):
        for i in range(n):
            for j in range(n):
                z[f, i, j] = np.sum(image[i:i + k, j:j + k] * W[f, 0]) + b[f]
    a = np.maximum(z, 0)
    pooled = np.array([[[a[f, 2 * i:2 * i + 2, 2 * j:2 * j + 2].max() for j in range(n // 2)] for i in range(n // 2)]
                       for f in range(F)])
    return a, pooled


def test_forward_stages_of_a_conv_stack_match_loops():
    m = conv_model()
    v = m.network.views
    img = np.random.default_rng(0).random((28, 28))
    stages = analysis.forward_stages(m, img)
    assert [(s.name, s.kind, s.activation) for s in stages] == [
        ("input", "input", None), ("conv4x3:relu", "conv", "relu"), ("dense8:relu", "dense", "relu"),
        ("dense10:softmax", "dense", "softmax")]
    assert [s.values.shape for s in stages] == [(1, 28, 28), (4, 26, 26), (8,), (10,)]
    maps, pooled = _loop_conv_relu_pool(img, v[0]["W"].astype(np.float64), v[0]["b"])
    np.testing.assert_allclose(stages[1].values, maps, rtol=1e-5, atol=1e-6)
    hidden = np.maximum(v[4]["W"] @ pooled.reshape(-1) + v[4]["b"], 0)
    np.testing.assert_allclose(stages[2].values, hidden, rtol=1e-4, atol=1e-5)
    z = v[6]["W"] @ hidden + v[6]["b"]
    np.testing.assert_allclose(stages[3].values, np.exp(z) / np.exp(z).sum(), rtol=1e-4, atol=1e-6)
    flat = analysis.layer_activations(m, img)
    assert [a.shape for a in flat] == [(784,), (4 * 26 * 26,), (8,), (10,)]
    assert all(np.array_equal(a, s.values.reshape(-1)) for a, s in zip(flat, stages))


def test_a_linear_conv_stage_is_its_own_output():
    m = conv_model("conv2x3:linear,dense4")
    stages = analysis.forward_stages(m, np.random.default_rng(1).random((28, 28)))
    assert [s.name for s in stages] == ["input", "conv2x3", "dense4:relu", "dense10:softmax"]
    outputs = dict(analysis.layer_outputs(m, np.random.default_rng(1).random((28, 28))))
    assert np.array_equal(stages[1].values, outputs["conv2x3"])
    assert stages[1].activation is None and stages[1].values.min() < 0


def test_layer_activations_are_the_forward_pass():
    m = small_model()
    img = np.random.default_rng(0).random((28, 28))
    acts = analysis.layer_activations(m, img)
    x = img.reshape(1, -1).astype(np.float32)
    ref = [x[0]]
    for l in (1, 3, 5):                                                # z = W a + b, a = σ(z), by hand
        v = m.network.views[l]
        ref.append(1 / (1 + np.exp(-(v["W"] @ ref[-1] + v["b"]))))
    assert [a.shape for a in acts] == [(784,), (12,), (8,), (10,)]
    assert all(np.allclose(a, r, atol=1e-6) for a, r in zip(acts, ref))
    with pytest.raises(UsageError):
        analysis.layer_activations(m, np.zeros((10, 10)))


def test_model_summary(tiny_model):
    info = analysis.model_summary(load_model(tiny_model))
    assert info["sizes"] == [784, 32, 10] and info["parameters"] == 784 * 32 + 32 + 32 * 10 + 10
    assert info["activation"] == "relu" and info["architecture"] == "dense32:relu"
    assert info["epochs"] == len(info["history"]) == 2
    assert info["dataset"]["spec"] == "embedded"
    assert info["best_val_accuracy"] is not None


def test_model_summary_of_a_conv_stack():
    m = conv_model()
    info = analysis.model_summary(m)
    assert info["sizes"] is None and info["activation"] is None
    assert info["architecture"] == "conv4x3:relu,pool2,dense8:relu"
    assert info["output"] == "softmax" and info["parameters"] == m.network.n_params == 5546
    assert len(info["layers"]) == 8 and info["layers"][0]["output_shape"] == [4, 26, 26]


def test_dream_noise_and_errors_on_a_conv_stack(embedded):
    m = conv_model()
    d = analysis.dream(m, 6, steps=25, restarts=2)
    assert d.probability > d.start_probability and d.image.shape == (28, 28)
    assert d.outputs == pytest.approx(m.network.predict_proba(d.image[None])[0], abs=1e-4)
    rep = analysis.noise_experiment(m, samples=64, seed=0, keep=2)
    scores = m.scores(np.random.default_rng(0).random((64, 784), dtype=np.float32))
    assert np.array_equal(rep.predicted, scores.argmax(axis=1)) and rep.images.shape == (2, 28, 28)
    mk = analysis.confident_errors(m, embedded.test_images[:100], embedded.test_labels[:100], limit=3)
    assert np.all(mk.predicted != mk.true) and np.all(np.diff(mk.confidence) <= 0)


def test_test_accuracy_recorded_measured_or_not(tiny_model):
    m = load_model(tiny_model)
    acc, note = analysis.test_accuracy(m)
    images, labels, _ = analysis.load_split(m)
    assert acc == pytest.approx(float((m.predict_proba(images / 255.0).argmax(axis=1) == labels).mean()))
    assert "measured now" in note
    assert analysis.test_accuracy(m, measure=False)[0] is None
    m.meta["test_accuracy"] = 0.5
    assert analysis.test_accuracy(m, measure=False) == (0.5, "recorded in the model file when it was trained")
    bare = small_model()
    bare.dataset = {"spec": "/nonexistent/data.npz"}
    acc, note = analysis.test_accuracy(bare)
    assert acc is None and "not measured" in note


def test_load_split_checks_the_model_fits(tmp_path, embedded):
    m = small_model(sizes=(784, 4, 3))
    with pytest.raises(UsageError):
        analysis.load_split(m, "embedded")
    with pytest.raises(UsageError):
        analysis.load_split(small_model(), "embedded", "validation")


def test_save_png_is_atomic_and_checks_the_target(tmp_path):
    from PIL import Image

    rgb = np.zeros((6, 10, 3), np.uint8)
    rgb[:, :5, 0] = 255
    out = analysis.save_png(rgb, tmp_path / "a.png")
    with Image.open(out) as im:
        assert im.size == (10, 6) and im.getpixel((0, 0)) == (255, 0, 0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]
    with pytest.raises(UsageError):
        analysis.save_png(rgb, tmp_path)
    with pytest.raises(UsageError):
        analysis.save_png(rgb, tmp_path / "missing" / "a.png")
