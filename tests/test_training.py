"""Training: determinism, learning, presets and options, resume, divergence, interruption."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from digitnet.datasets import make_dataset
from digitnet.errors import TrainingError, UsageError
from digitnet.training import PRESETS, SCHEDULES, TrainConfig, evaluate_arrays, resolve_config, split_validation, train

DIGITNET = Path(sys.executable).with_name("digitnet")


@pytest.fixture(scope="module")
def small(embedded):
    """2,000 embedded training digits, 500 test digits."""
    return make_dataset("small", embedded.train_images[:2000], embedded.train_labels[:2000],
                        embedded.test_images[:500], embedded.test_labels[:500])


def test_same_seed_same_bits(small):
    cfg = resolve_config("default", hidden=(24,), epochs=2, augment=True)
    a, b = train(small, cfg), train(small, cfg)
    assert np.array_equal(a.network.params, b.network.params)
    c = train(small, resolve_config("default", hidden=(24,), epochs=2, augment=True, seed=1))
    assert not np.array_equal(a.network.params, c.network.params)


@pytest.mark.parametrize("preset", ["3b1b", "nielsen", "default"])
def test_presets_learn(small, preset):
    cfg = resolve_config(preset, epochs=3)
    result = train(small, cfg)
    x = small.test_images.reshape(500, -1).astype(np.float32) / 255
    _, acc = evaluate_arrays(result.network, x, small.test_labels)
    assert acc > 0.75, f"{preset}: {acc}"
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert result.best_epoch in (1, 2, 3)


def test_3b1b_preset_is_the_videos_network():
    p = PRESETS["3b1b"]
    assert (p.hidden, p.activation, p.cost) == ((16, 16), "sigmoid", "quadratic")
    n = PRESETS["nielsen"]
    assert (n.hidden, n.batch_size, n.lr) == ((30,), 10, 3.0)


def test_best_epoch_is_kept(small):
    seen = []
    result = train(small, resolve_config("default", hidden=(16,), epochs=4, augment=False), on_epoch=seen.append)
    best = max(seen, key=lambda s: s.val_accuracy)
    assert result.best_epoch == best.epoch
    x_val_idx = result.val_indices
    x = small.train_images[x_val_idx].reshape(len(x_val_idx), -1).astype(np.float32) / 255
    assert evaluate_arrays(result.network, x, small.train_labels[x_val_idx])[1] == pytest.approx(best.val_accuracy)


def test_resume_continues_history(small):
    cfg = resolve_config("default", hidden=(16,), epochs=2, augment=False)
    first = train(small, cfg)
    more = train(small, cfg, resume=first.network, history=first.history)
    assert [h["epoch"] for h in more.history] == [1, 2, 3, 4]
    with pytest.raises(UsageError, match="--resume"):
        bad = make_dataset("wide", np.zeros((10, 10, 10), np.uint8), np.arange(10) % 10, None, None)
        train(bad, cfg, resume=first.network)


def test_divergence_stops_with_advice(small):
    cfg = resolve_config("default", hidden=(16,), epochs=3, lr=1e6, momentum=0.9, augment=False)
    with pytest.raises(TrainingError, match="lower --lr"):
        train(small, cfg)


def test_chunk_progress_is_reported(small):
    calls = []
    train(small, resolve_config("3b1b", epochs=1), on_chunk=lambda *a: calls.append(a))
    epochs, done, totals = {c[0] for c in calls}, [c[1] for c in calls], {c[2] for c in calls}
    assert epochs == {0} and done == sorted(done) and done[-1] == totals.pop() == 180   # 1,800 rows / batch 10


@pytest.mark.parametrize("field, value, option", [
    ("epochs", 0, "--epochs"), ("batch_size", -1, "--batch-size"), ("lr", 0.0, "--lr"), ("lr", float("nan"), "--lr"),
    ("momentum", 1.0, "--momentum"), ("l2", -1.0, "--l2"), ("val_split", 1.0, "--val-split"),
    ("activation", "gelu", "--activation"), ("cost", "mse", "--cost"), ("schedule", "linear", "--schedule"),
    ("hidden", (16, 0), "--hidden"), ("hidden", (70000,), "--hidden"), ("seed", -1, "--seed"),
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
    cfg = resolve_config("3b1b")
    assert TrainConfig.from_json(cfg.to_json() | {"unknown": 1}) == cfg


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
@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(), reason="dataset-fashion-mnist not installed")
def test_full_size_fashion_mnist_epoch(tmp_path):
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
