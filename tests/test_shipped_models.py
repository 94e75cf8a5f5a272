"""The models that ship: they load, they meet their accuracy, and the default one reads
person-made digit images (typed and hand-drawn, any polarity, PNG and JPEG)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from digit_images import write_set
from digitnet.metrics import evaluate
from digitnet.modelfile import load_model
from digitnet.predict import predict_inputs

MODELS = Path(__file__).resolve().parents[1] / "models"


def truth(folder: Path) -> dict[str, int]:
    with open(folder / "labels.csv", newline="") as f:
        return {r["file"].strip(): int(r["label"]) for r in csv.DictReader(f)}


def share_right(model, folder: Path) -> float:
    labels = truth(folder)
    files = sorted(labels)
    rows = list(predict_inputs(model, [str(folder / f) for f in files]))
    return float(np.mean([r.label == labels[f] for r, f in zip(rows, files)]))


@pytest.mark.parametrize("name, floor", [("digitnet.npz", 0.97), ("mnist-3b1b.npz", 0.90), ("attention.npz", 0.98)])
def test_shipped_models_meet_their_accuracy(embedded, name, floor):
    model = load_model(MODELS / name)
    assert evaluate(model, embedded.test_images, embedded.test_labels)["accuracy"] >= floor


def test_default_model_reads_person_made_digits(tmp_path):
    model = load_model(MODELS / "digitnet.npz")
    write_set(tmp_path, 200, seed=2026)
    assert share_right(model, tmp_path) >= 0.9


def test_default_model_reads_the_shared_samples(samples):
    assert share_right(load_model(MODELS / "digitnet.npz"), samples) >= 0.9
