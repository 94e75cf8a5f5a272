"""digitnet.analysis: the input gradient against finite differences, dreaming, noise, confident
mistakes, neuron selection, parameter counts, and atomic PNG writing."""

from __future__ import annotations

import numpy as np
import pytest

from digitnet import analysis
from digitnet.errors import UsageError
from digitnet.modelfile import Model, load_model
from digitnet.network import Network


def small_model(activation="sigmoid", cost="quadratic", sizes=(784, 12, 8, 10), seed=0) -> Model:
    """An untrained model with seeded weights: enough for shapes, gradients and determinism."""
    net = Network.init(sizes, activation, cost, seed=seed)
    net.biases[0][...] = np.random.default_rng(seed + 1).normal(0, 0.3, sizes[1])
    return Model(net, tuple(str(i) for i in range(sizes[-1])), (28, 28))


@pytest.mark.parametrize("activation,cost", [("sigmoid", "quadratic"), ("relu", "cross-entropy"), ("tanh", "cross-entropy")])
def test_input_gradient_matches_central_differences(activation, cost):
    net = Network.init((20, 7, 5, 4), activation, cost, seed=3).astype(np.float64)
    rng = np.random.default_rng(4)
    x = rng.random((3, 20))
    targets = np.array([0, 2, 3])
    a_L, grad = analysis.input_gradient(net, x, targets)
    assert np.allclose(a_L, net.feedforward(x)[-1])

    def objective(xs):  # ln a_L[target] of each row
        return np.log(net.feedforward(xs)[-1][np.arange(len(xs)), targets])

    eps = 1e-6
    numeric = np.empty_like(x)
    for j in range(x.shape[1]):
        step = np.zeros_like(x)
        step[:, j] = eps
        numeric[:, j] = (objective(x + step) - objective(x - step)) / (2 * eps)
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


def test_parameter_counts_and_layer_weights():
    m = small_model()
    rows = analysis.parameter_counts(m.network)
    assert [r["layer"] for r in rows] == [1, 2, 3]
    assert sum(r["parameters"] for r in rows) == m.network.params.size
    assert analysis.layer_weights(m.network, 2).shape == (8, 12)
    for bad in (0, 4):
        with pytest.raises(UsageError):
            analysis.layer_weights(m.network, bad)


def test_layer_activations_are_the_forward_pass():
    m = small_model()
    img = np.random.default_rng(0).random((28, 28))
    acts = analysis.layer_activations(m, img)
    ref = m.network.feedforward(img.reshape(1, -1).astype(np.float32))
    assert [a.shape for a in acts] == [(784,), (12,), (8,), (10,)]
    assert all(np.allclose(a, r[0]) for a, r in zip(acts, ref))
    with pytest.raises(UsageError):
        analysis.layer_activations(m, np.zeros((10, 10)))


def test_model_summary(tiny_model):
    info = analysis.model_summary(load_model(tiny_model))
    assert info["sizes"] == [784, 32, 10] and info["parameters"] == 784 * 32 + 32 + 32 * 10 + 10
    assert info["epochs"] == len(info["history"]) == 2
    assert info["dataset"]["spec"] == "embedded"
    assert info["best_val_accuracy"] is not None


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
