"""Metrics: confusion matrix orientation, per-class scores, most-confused pairs, evaluate()."""

from __future__ import annotations

import numpy as np
import pytest

from digitnet.metrics import confusion_matrix, evaluate, most_confused, per_class
from digitnet.modelfile import load_model


def test_confusion_rows_are_true_labels():
    cm = confusion_matrix(np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 2, 0]), 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


def test_per_class_scores_by_hand():
    cm = np.array([[1, 1, 0], [0, 1, 0], [1, 0, 2]])
    rows = per_class(cm, ("a", "b", "c"))
    assert rows[0] == {"label": 0, "name": "a", "precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert rows[1]["precision"] == 0.5 and rows[1]["recall"] == 1.0 and rows[1]["f1"] == pytest.approx(2 / 3)
    assert rows[2]["precision"] == 1.0 and rows[2]["recall"] == pytest.approx(2 / 3)
    empty = per_class(np.zeros((2, 2), int), ("x", "y"))
    assert empty[0]["f1"] == 0.0 and empty[0]["support"] == 0


def test_most_confused_pairs():
    cm = np.array([[5, 3, 0], [0, 5, 0], [7, 1, 5]])
    assert most_confused(cm, 2) == [(2, 0, 7), (0, 1, 3)]
    assert most_confused(np.eye(3, dtype=int)) == []


def test_evaluate_agrees_with_a_direct_computation(tiny_model, embedded):
    model = load_model(tiny_model)
    images, labels = embedded.test_images[:300], embedded.test_labels[:300]
    report = evaluate(model, images, labels)
    predicted = model.predict_proba(images.reshape(300, -1) / 255.0).argmax(1)
    assert report["accuracy"] == pytest.approx((predicted == labels).mean())
    assert report["n"] == 300 and np.array(report["confusion_matrix"]).sum() == 300
    assert np.trace(np.array(report["confusion_matrix"])) == (predicted == labels).sum()
    assert report["loss"] > 0 and len(report["per_class"]) == 10


def test_loss_and_accuracy_by_hand():
    """A fixed network whose outputs are known: mean cost and share right, worked out here."""
    from digitnet.metrics import loss_and_accuracy
    from digitnet.nn.network import Network, dense_layers

    # 2 inputs -> 2 softmax outputs with W = I, b = 0: the outputs are softmax(x)
    net = Network(dense_layers((2, 2), "relu", "softmax"), (1, 1, 2), "cross-entropy",
                  np.array([1, 0, 0, 1, 0, 0], np.float32))
    x = np.array([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]], np.float32)
    labels = np.array([0, 0, 1])
    p = [1 / (1 + np.exp(-2.0)), 1 / (1 + np.exp(1.0)), 1 / (1 + np.exp(3.0))]      # softmax prob. of the label
    loss, acc = loss_and_accuracy(net, x, labels)
    assert loss == pytest.approx(-np.mean(np.log(p)), rel=1e-6)
    assert acc == pytest.approx(1 / 3)
    quad = Network(dense_layers((2, 2), "relu", "sigmoid"), (1, 1, 2), "quadratic", net.params.copy())
    a = 1 / (1 + np.exp(-x))                                                       # sigmoid outputs
    y = np.eye(2)[labels]
    assert loss_and_accuracy(quad, x, labels)[0] == pytest.approx((0.5 * ((a - y) ** 2).sum(axis=1)).mean(), rel=1e-6)
