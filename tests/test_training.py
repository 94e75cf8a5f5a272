"""Training: determinism, learning, presets and options, resume, optimizers, the learning-rate
schedule, the two step paths (fused dense kernel, NumPy layers), divergence, interruption."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from digitnet import training
from digitnet.datasets import make_dataset
from digitnet.errors import ModelError, TrainingError, UsageError
from digitnet.metrics import loss_and_accuracy
from digitnet.modelfile import load_model, save_model
from digitnet.nn.functions import to_unit_float
from digitnet.training import (PRESETS, SCHEDULES, TrainConfig, model_from_result, resolve_config, resume_config,
                               split_validation, train)

DIGITNET = Path(sys.executable).with_name("digitnet")
CONV = "conv4x5,pool2,dense16"


@pytest.fixture(scope="module")
def small(embedded):
    """2,000 embedded training digits, 500 test digits."""
    return make_dataset("small", embedded.train_images[:2000], embedded.train_labels[:2000],
                        embedded.test_images[:500], embedded.test_labels[:500])


@pytest.fixture(scope="module")
def tiny(embedded):
    """600 training digits, 300 test digits: enough for a small conv net in a second."""
    return make_dataset("tiny", embedded.train_images[:600], embedded.train_labels[:600],
                        embedded.test_images[:300], embedded.test_labels[:300])


def test_accuracy(net, data):
    """Test-split accuracy of ``net`` on ``data``."""
    x = to_unit_float(data.test_images).reshape(len(data.test_labels), -1)
    return loss_and_accuracy(net, x, data.test_labels)[1]


test_accuracy.__test__ = False        # a helper, not a test


def test_same_seed_same_bits(small):
    cfg = resolve_config("default", hidden=(24,), epochs=2, augment=True)
    a, b = train(small, cfg), train(small, cfg)
    assert np.array_equal(a.network.params, b.network.params)
    c = train(small, resolve_config("default", hidden=(24,), epochs=2, augment=True, seed=1))
    assert not np.array_equal(a.network.params, c.network.params)


def test_same_seed_same_bits_for_a_conv_net_with_dropout(tiny):
    """The NumPy-layer path: init, shuffles, augmentation and dropout masks all from the seed."""
    cfg = resolve_config("default", layers=CONV + ",dropout0.3", epochs=2, augment=True, val_split=0.1)
    a, b = train(tiny, cfg), train(tiny, cfg)
    assert np.array_equal(a.network.params, b.network.params)
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]
    assert not np.array_equal(a.network.params, cfg.build((28, 28), 10).params)     # it trained
    c = train(tiny, resolve_config("default", layers=CONV + ",dropout0.3", epochs=2, augment=True, seed=1))
    assert not np.array_equal(a.network.params, c.network.params)


def test_clothing_is_augmented_with_the_objects_profile(tiny, monkeypatch):
    """Images whose classes are Fashion-MNIST's are augmented as the objects profile says
    (moved and resized only: no rotation, no shear, strokes never thinner or bolder), digits
    as handwriting (rotated, slanted, strokes changed). Seen where the transforms reach the
    warp kernel, every epoch."""
    from digitnet import kernels
    from digitnet.datasets import FASHION_NAMES

    warps = []
    real = kernels.warp_images

    def spy(images, mats, thickness, out):
        warps.append((mats.copy(), thickness.copy()))
        return real(images, mats, thickness, out)

    monkeypatch.setattr(kernels, "warp_images", spy)
    cfg = resolve_config("default", hidden=(8,), epochs=2, augment=True)
    clothes = make_dataset("clothes", tiny.train_images, tiny.train_labels, tiny.test_images, tiny.test_labels,
                           FASHION_NAMES)
    train(clothes, cfg)
    assert len(warps) == 2 and all(len(t) == 540 for _, t in warps)          # one per epoch, every training image
    for mats, thickness in warps:
        assert not thickness.any()                                          # strokes unchanged
        assert not mats[:, 0, 1].any() and not mats[:, 1, 0].any()          # no rotation, no shear
        assert np.all(np.abs(np.abs(mats[:, [0, 1], [0, 1]]) - 1) < 0.1)     # resized by at most ±6% (×aspect ±3%)
        assert 0.4 < np.mean(mats[:, 0, 0] < 0) < 0.6                        # and about half mirrored
        assert np.abs(mats[:, :, 2]).max() > 1                               # but moved
    warps.clear()
    train(tiny, cfg)                                                         # the same images, as digits
    assert len(warps) == 2
    for mats, thickness in warps:
        assert (thickness != 0).mean() > 0.2 and (np.abs(mats[:, 0, 1]) > 0.05).mean() > 0.5


@pytest.mark.parametrize("preset", ["3b1b", "nielsen", "mlp"])
def test_presets_learn(small, preset):
    cfg = resolve_config(preset, epochs=3)
    result = train(small, cfg)
    acc = test_accuracy(result.network, small)
    assert acc > 0.75, f"{preset}: {acc}"
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert result.best_epoch in (1, 2, 3)


def test_a_small_conv_net_learns(tiny):
    result = train(tiny, resolve_config("default", layers=CONV, epochs=3, lr=0.05, augment=False))
    assert test_accuracy(result.network, tiny) > 0.6
    assert result.history[-1]["loss"] < 0.7 * result.history[0]["loss"]


@pytest.mark.parametrize("layers", ["dense32", CONV])
def test_adam_trains_well_above_chance(tiny, layers):
    cfg = resolve_config("default", layers=layers, optimizer="adam", lr=0.003, epochs=3, augment=False)
    result = train(tiny, cfg)
    assert test_accuracy(result.network, tiny) > 0.55             # chance is 0.1
    assert result.history[-1]["loss"] < 0.6 * result.history[0]["loss"]


def test_presets_are_the_networks_they_name():
    p = PRESETS["3b1b"]
    assert (p.hidden, p.activation, p.cost, p.layers) == ((16, 16), "sigmoid", "quadratic", "")
    n = PRESETS["nielsen"]
    assert (n.hidden, n.batch_size, n.lr) == ((30,), 10, 3.0)
    assert PRESETS["default"] is PRESETS["cnn"]
    lenet = PRESETS["lenet"].build((28, 28), 10)
    assert lenet.shapes[1:] == [(6, 28, 28), (6, 28, 28), (6, 14, 14), (16, 10, 10), (16, 10, 10), (16, 5, 5), (400,),
                                (120,), (120,), (84,), (84,), (10,), (10,)]
    assert lenet.n_params == 61_706                              # LeNet-5's count with padded input
    cnn = PRESETS["cnn"].build((28, 28), 10)
    assert [l.describe() for l in cnn.layers] == ["conv32x5", "relu", "pool2", "conv64x5", "relu", "pool2", "flatten",
                                                   "dense256", "relu", "dropout0.5", "dense10", "softmax"]
    cnn3 = PRESETS["cnn3"].build((28, 28), 10)
    assert cnn3.shapes[1:8] == [(32, 28, 28)] * 2 + [(32, 14, 14)] + [(64, 12, 12)] * 2 + [(64, 6, 6), (2304,)]
    vgg = PRESETS["vgg"].build((28, 28), 10)
    assert vgg.shapes[1:12] == [(32, 26, 26)] * 2 + [(32, 24, 24)] * 2 + [(32, 12, 12)] + [(64, 10, 10)] * 2 + \
        [(64, 8, 8)] * 2 + [(64, 4, 4), (1024,)]
    assert vgg.n_params == 329_962
    assert [l.describe() for l in vgg.layers if l.describe().startswith("conv")] == ["conv32x3"] * 2 + ["conv64x3"] * 2
    mlp = PRESETS["mlp"].build((28, 28), 10)
    assert mlp.mlp() == ((784, 512, 256, 10), "relu", "softmax")


def test_dense_sgd_runs_the_fused_kernel_and_the_rest_the_layers():
    from digitnet.nn.network import Network, dense_layers

    fits = training._MLPKernel.fits
    for preset, kw, expected in [("default", dict(hidden=(16,)), True), ("3b1b", {}, True),
                                 ("default", dict(layers=CONV), False),
                                 ("default", dict(hidden=(16,), optimizer="adam"), False),
                                 ("default", dict(layers="dense16,dropout0.5"), False),
                                 ("default", dict(layers="dense16:tanh,dense8:relu"), False)]:
        cfg = resolve_config(preset, **kw)
        assert fits(cfg.build((28, 28), 10), cfg) is expected, (preset, kw)
    # a dense stack whose output and cost are not a pair the kernel knows
    cfg = resolve_config("default", hidden=(16,), cost="quadratic")
    odd = Network(dense_layers((784, 16, 10), "relu", "softmax"), (1, 28, 28), "quadratic")
    assert fits(cfg.build((28, 28), 10), cfg) and not fits(odd, cfg)


def test_kernel_and_layer_paths_train_alike(small, monkeypatch):
    """A dense stack with SGD trained by the fused kernel and by the NumPy layers (per mini-batch
    cost_and_gradient + SGD.step) ends at the same weights, up to float32 rounding."""
    cfg = resolve_config("default", hidden=(24,), epochs=1, augment=False, lr=0.05, momentum=0.9, l2=1e-3)
    kernel = train(small, cfg)
    monkeypatch.setattr(training._MLPKernel, "fits", staticmethod(lambda net, config: False))
    layers = train(small, cfg)
    assert not np.array_equal(kernel.network.params, layers.network.params)     # two different computations
    np.testing.assert_allclose(layers.network.params, kernel.network.params, rtol=1e-3, atol=1e-4)
    assert layers.history[0]["loss"] == pytest.approx(kernel.history[0]["loss"], rel=1e-4)


@pytest.mark.parametrize("kw", [dict(hidden=(16,)), dict(layers=CONV, optimizer="adam"), dict(layers=CONV)],
                         ids=["dense-kernel", "conv-adam", "conv-sgd"])
def test_the_schedule_reaches_the_update(tiny, monkeypatch, kw):
    """A schedule of 0 leaves every weight as initialised; constant and cosine agree in the
    first epoch (both ×1) and differ in the second (×1 against ×0.5)."""
    monkeypatch.setitem(SCHEDULES, "zero", lambda epoch, epochs: 0.0)
    cfg = resolve_config("default", **kw, epochs=2, augment=False, lr=0.05, schedule="zero")
    frozen = train(tiny, cfg)
    assert [h["lr"] for h in frozen.history] == [0.0, 0.0]
    assert np.array_equal(frozen.network.params, cfg.build((28, 28), 10).params)
    const = train(tiny, resolve_config("default", **kw, epochs=2, augment=False, lr=0.05, schedule="constant"))
    cos = train(tiny, resolve_config("default", **kw, epochs=2, augment=False, lr=0.05, schedule="cosine"))
    assert [h["lr"] for h in cos.history] == [0.05, pytest.approx(0.025)]
    assert const.history[0]["loss"] == cos.history[0]["loss"]
    assert const.history[1]["loss"] != cos.history[1]["loss"]


def dense_accuracy_by_hand(net, images, labels) -> float:
    """A dense ReLU network's accuracy from its weights, with a forward pass written here in
    float64 (z = a W^T + b, ReLU between layers; the largest output wins): a second
    implementation, not the library's."""
    a = images.reshape(len(images), -1).astype(np.float64) / 255          # (batch, 784)
    dense = [v for v in net.views if "W" in v]
    for i, v in enumerate(dense):
        a = a @ v["W"].astype(np.float64).T + v["b"]                       # (batch, n_out)
        if i < len(dense) - 1:
            a = np.maximum(a, 0)
    return float(np.mean(a.argmax(axis=1) == labels))


def test_best_epoch_is_kept(small, monkeypatch):
    """The network returned is the one of the epoch with the best validation accuracy, both
    judged by a forward pass written in the test: the network is copied at each epoch's
    validation, every copy scored by hand, and the best copy must be the result."""
    snapshots = []
    real = training.loss_and_accuracy

    def snapshot(net, x, y):
        snapshots.append(net.copy())
        return real(net, x, y)

    monkeypatch.setattr(training, "loss_and_accuracy", snapshot)
    # lr 1.0 without momentum: validation accuracy goes up and down, so the best is not simply the last
    cfg = resolve_config("default", hidden=(16,), epochs=6, augment=False, lr=1.0, momentum=0.0,
                         schedule="constant", val_split=0.2)
    result = train(small, cfg)
    idx = result.val_indices
    images, labels = small.train_images[idx], small.train_labels[idx]
    by_hand = [dense_accuracy_by_hand(net, images, labels) for net in snapshots]
    assert len(by_hand) == 6 and len(set(by_hand)) > 1
    best = int(np.argmax(by_hand))                        # the first of equals, as a strict improvement keeps it
    assert best < 5, f"the set-up must make an earlier epoch the best: {by_hand}"
    assert result.best_epoch == best + 1, by_hand
    assert np.array_equal(result.network.params, snapshots[best].params)
    assert [h["val_accuracy"] for h in result.history] == pytest.approx(by_hand, abs=1 / len(labels))


def test_resume_continues_history(small):
    """The resumed run keeps the earlier history exactly (and leaves the caller's list
    alone), numbers its epochs on from it, and starts from the given weights: its first
    epoch's cost is close to the last saved epoch's, far from a fresh start's."""
    cfg = resolve_config("default", hidden=(16,), epochs=2, augment=False)
    first = train(small, cfg)
    saved_history = [dict(h) for h in first.history]
    more = train(small, cfg, resume=first.network, history=first.history)
    assert [h["epoch"] for h in more.history] == [1, 2, 3, 4]
    assert more.history[:2] == saved_history and first.history == saved_history
    fresh, saved, resumed = first.history[0]["loss"], first.history[-1]["loss"], more.history[2]["loss"]
    assert abs(resumed - saved) < 0.5 * (fresh - saved), (fresh, saved, resumed)
    with pytest.raises(UsageError, match="--resume"):
        bad = make_dataset("wide", np.zeros((10, 10, 10), np.uint8), np.arange(10) % 10, None, None)
        train(bad, cfg, resume=first.network)


def test_resume_starts_from_the_saved_weights(tiny, tmp_path, monkeypatch):
    """Through the model file: the resumed run's first epoch carries on from where the saved
    network was, far below a fresh start; with a learning rate of 0 it returns the saved
    weights bit for bit."""
    cfg = resolve_config("default", layers=CONV, epochs=2, lr=0.05, augment=False)
    first = train(tiny, cfg)
    path = save_model(model_from_result(first, tiny, cfg, "tiny"), tmp_path / "m.npz")
    model = load_model(path)
    again = resume_config(model, epochs=1)
    assert again.layers == "conv4x5:relu,pool2,dense16:relu" and again.lr == 0.05 and again.epochs == 1
    more = train(tiny, again, resume=model.network, history=model.history)
    fresh, saved, resumed = first.history[0]["loss"], first.history[-1]["loss"], more.history[-1]["loss"]
    assert [h["epoch"] for h in more.history] == [1, 2, 3]
    assert resumed < 0.75 * fresh and abs(resumed - saved) < 0.5 * (fresh - saved), (fresh, saved, resumed)
    monkeypatch.setitem(SCHEDULES, "zero", lambda epoch, epochs: 0.0)
    still = train(tiny, resume_config(model, epochs=1, schedule="zero"), resume=model.network, history=model.history)
    assert np.array_equal(still.network.params, model.network.params)
    assert still.network is not model.network and not np.shares_memory(still.network.params, model.network.params)


@pytest.mark.parametrize("override", [dict(layers="conv8x5,pool2,dense16"), dict(layers="conv4x5,pool2,dense32"),
                                      dict(hidden=(16,)), dict(activation="tanh"), dict(cost="quadratic"),
                                      dict(cost="mse"), dict(layers="conv4x5:tanh,pool2,dense16")])
def test_resume_refuses_a_changed_network(tmp_path, override):
    cfg = resolve_config("default", layers=CONV, epochs=1)
    model = training_model(cfg)
    with pytest.raises(UsageError, match=r"--resume keeps the model's network \(conv4x5:relu,pool2,dense16:relu"):
        resume_config(model, **override)


def training_model(cfg):
    """An untrained Model as train would save it for ``cfg`` (no training needed to resume-check)."""
    from digitnet.modelfile import Model

    return Model(cfg.build((28, 28), 10), tuple("0123456789"), config=cfg.to_json(), path="m.npz")


def test_resume_takes_other_options_on_top_of_the_models_config():
    model = training_model(resolve_config("default", layers=CONV, epochs=1))
    cfg = resume_config(model, lr=0.01, optimizer="adam", epochs=7, seed=3)
    assert (cfg.lr, cfg.optimizer, cfg.epochs, cfg.seed, cfg.cost) == (0.01, "adam", 7, 3, "cross-entropy")
    assert cfg.layers == "conv4x5:relu,pool2,dense16:relu"
    with pytest.raises(UsageError, match="--lr"):
        resume_config(model, lr=-1.0)
    model.config = {"epochs": "many"}
    with pytest.raises(ModelError, match="wrong type"):
        resume_config(model)


@pytest.mark.parametrize("same", [dict(layers="conv4x5:relu,maxpool2,16"), dict(layers=CONV, cost="log-loss"),
                                  dict(activation="relu")])
def test_resume_accepts_its_own_network_written_any_way(same):
    model = training_model(resolve_config("default", layers=CONV, epochs=1))
    assert resume_config(model, **same).layers == "conv4x5:relu,pool2,dense16:relu"


def test_resume_of_a_network_with_a_linear_layer():
    model = training_model(resolve_config("default", layers="conv4x3:linear,pool2", epochs=1))
    cfg = resume_config(model, cost="cross-entropy")
    assert [l.config() for l in cfg.build((28, 28), 10).layers] == [l.config() for l in model.network.layers]


def test_resume_of_a_version_1_model(small):
    """The shipped v1 3b1b file resumes as its dense sigmoid network, through the fused kernel."""
    model = load_model(Path(__file__).resolve().parent / "data" / "model-v1-3b1b.npz")
    cfg = resume_config(model, epochs=1)
    assert cfg.layers == "dense16:sigmoid,dense16:sigmoid" and cfg.cost == "quadratic"
    assert training._MLPKernel.fits(model.network, cfg)
    before = test_accuracy(model.network, small)
    result = train(small, cfg, resume=model.network, history=model.history)
    assert len(result.history) == len(model.history) + 1
    assert test_accuracy(result.network, small) > before - 0.05


@pytest.mark.parametrize("kw", [dict(hidden=(16,)), dict(layers=CONV)], ids=["kernel", "layers"])
def test_divergence_stops_with_advice(tiny, kw):
    cfg = resolve_config("default", **kw, epochs=3, lr=1e6, momentum=0.9, augment=False)
    with pytest.raises(TrainingError, match="lower --lr"), np.errstate(all="ignore"):
        train(tiny, cfg)


def test_chunk_progress_is_reported(small):
    calls = []
    train(small, resolve_config("3b1b", epochs=1), on_chunk=lambda *a: calls.append(a))
    epochs, done, totals = {c[0] for c in calls}, [c[1] for c in calls], {c[2] for c in calls}
    assert epochs == {0} and done == sorted(done) and done[-1] == totals.pop() == 180   # 1,800 rows / batch 10


@pytest.mark.parametrize("field, value, option", [
    ("epochs", 0, "--epochs"), ("batch_size", -1, "--batch-size"), ("lr", 0.0, "--lr"), ("lr", float("nan"), "--lr"),
    ("momentum", 1.0, "--momentum"), ("l2", -1.0, "--l2"), ("val_split", 1.0, "--val-split"),
    ("activation", "gelu", "--activation"), ("cost", "mse", "--cost"), ("schedule", "linear", "--schedule"),
    ("hidden", (16, 0), "--hidden"), ("hidden", (70000,), "70000"), ("seed", -1, "--seed"),
    ("optimizer", "rmsprop", "--optimizer"), ("layers", "conv8x5,dense16,pool2", "--layers: 'pool2'"),
    ("layers", "dense16,,dense8", "--layers"), ("layers", "lstm8", "'lstm8'"),
])
def test_config_validation_names_the_option(field, value, option):
    with pytest.raises(UsageError, match=option):
        TrainConfig(**{field: value}).validate()
    with pytest.raises(UsageError, match="--preset"):
        resolve_config("huge")


def test_schedules_and_split():
    assert SCHEDULES["constant"](5, 10) == 1.0
    assert [SCHEDULES["step"](e, 8) for e in (0, 3, 4, 6)] == [1.0, 1.0, pytest.approx(0.1), pytest.approx(0.01)]
    cos = [SCHEDULES["cosine"](e, 10) for e in range(10)]
    assert cos[0] == 1.0 and all(a > b for a, b in zip(cos, cos[1:])) and cos[-1] > 0
    tr, va = split_validation(100, 0.1, 0)
    assert len(va) == 10 and len(tr) == 90 and not set(tr) & set(va)
    assert np.array_equal(va, split_validation(100, 0.1, 0)[1])


def test_config_json_round_trip():
    for cfg in (resolve_config("3b1b"), resolve_config("lenet", optimizer="adam")):
        assert TrainConfig.from_json(cfg.to_json() | {"unknown": 1}) == cfg
    assert resolve_config("cnn", hidden=(8,)).layers == ""          # --hidden replaces a preset's --layers


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_stops_training_and_saves_best(tmp_path, sig, code):
    out = tmp_path / "m.npz"
    proc = subprocess.Popen([str(DIGITNET), "train", "--epochs", "500", "--hidden", "64", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    line = ""
    while time.time() < deadline and "epoch" not in line:   # wait for the first finished epoch
        line = proc.stderr.readline()
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr and "Interrupted: saved" in stderr
    from digitnet.modelfile import load_model

    model = load_model(out)
    assert model.meta["stopped"] == "interrupted" and len(model.history) >= 1


@pytest.mark.slow
def test_full_size_fashion_mnist_epoch(tmp_path, fashion_mnist):
    """One epoch over all 60,000 Fashion-MNIST images through the real console script."""
    import json

    out = tmp_path / "fashion.npz"
    r = subprocess.run([str(DIGITNET), "train", "--data", "fashion-mnist", "--hidden", "128", "--epochs", "1",
                        "--batch-size", "128", "--no-augment", "--out", str(out), "--json"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["test_accuracy"] > 0.78          # one epoch of a 784-128-10 net reaches ~0.83
    from digitnet.modelfile import load_model

    model = load_model(out)
    assert model.class_names[9] == "Ankle boot" and model.dataset["train"] == 60000


def test_stop_signals_nest_and_a_second_ctrl_c_stops_at_once():
    """train() inside a command shares the command's guard: a signal at any moment is one
    flag; Ctrl-C twice means now (KeyboardInterrupt); the old handlers come back after."""
    import os

    from digitnet.training import stop_signals

    before = signal.getsignal(signal.SIGINT)
    with stop_signals() as outer:
        with stop_signals() as inner:
            assert inner is outer
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.01)
        assert outer.signum == signal.SIGTERM            # the inner block did not swallow it
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)
        assert outer.signum == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
    assert signal.getsignal(signal.SIGINT) is before
