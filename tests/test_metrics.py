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
    assert rows[0] == {"label": 0, "name": "a", "precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2, "predicted": 2}
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


def test_macro_and_weighted_averages_by_hand():
    """scikit-learn's averages, worked out by hand for the matrix above: macro = plain mean
    over the classes, weighted = mean weighted by support (2, 1, 3)."""
    from digitnet.metrics import averages

    rows = per_class(np.array([[1, 1, 0], [0, 1, 0], [1, 0, 2]]), ("a", "b", "c"))
    # precision 1/2, 1/2, 1; recall 1/2, 1, 2/3; f1 1/2, 2/3, 4/5
    avg = averages(rows)
    assert avg["macro_avg"] == pytest.approx({"precision": 2 / 3, "recall": (1 / 2 + 1 + 2 / 3) / 3,
                                              "f1": (1 / 2 + 2 / 3 + 4 / 5) / 3, "support": 6})
    assert avg["weighted_avg"] == pytest.approx({"precision": (2 * 1 / 2 + 1 / 2 + 3 * 1) / 6, "recall": 4 / 6,
                                                 "f1": (2 * 1 / 2 + 2 / 3 + 3 * 4 / 5) / 6, "support": 6})


def test_averages_skip_absent_classes_but_keep_predicted_ones():
    """A class nobody has and nobody predicted says nothing (left out, as scikit-learn does);
    one predicted but absent counts with precision 0."""
    from digitnet.metrics import averages

    cm = np.array([[2, 0, 1], [0, 0, 0], [0, 0, 1]])          # class 1: absent, never predicted
    assert averages(per_class(cm, "abc"))["macro_avg"]["precision"] == pytest.approx((1 + 0.5) / 2)
    cm = np.array([[2, 1, 0], [0, 0, 0], [0, 0, 1]])          # class 1: absent, predicted once
    assert averages(per_class(cm, "abc"))["macro_avg"]["precision"] == pytest.approx((1 + 0 + 1) / 3)


def test_tally_over_batches_equals_one_pass(tiny_model, embedded):
    """Counting batch by batch (what keeps evaluation's memory flat) changes nothing."""
    from digitnet.metrics import Tally

    model = load_model(tiny_model)
    images, labels = embedded.test_images[:500], embedded.test_labels[:500]
    whole = evaluate(model, images, labels, chunk=10_000)
    tally = Tally(model.network, 10)
    for i in range(0, 500, 37):
        tally.add(model.predict_proba(images[i:i + 37].reshape(-1, 784) / np.float32(255)), labels[i:i + 37])
    parts = tally.report(model.class_names)
    assert parts["confusion_matrix"] == whole["confusion_matrix"] and parts["n"] == 500
    assert parts["loss"] == pytest.approx(whole["loss"], rel=1e-6)
    small = evaluate(model, images, labels, chunk=64)
    assert small.pop("loss") == pytest.approx(whole.pop("loss"), rel=1e-6) and small == whole
