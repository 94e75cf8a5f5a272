"""Metrics of a trained model on labelled images: accuracy, cost, confusion, per-class scores."""

from __future__ import annotations

import numpy as np

from digitnet.nn.functions import COSTS, one_hot, to_unit_float


def mean_cost(net, a_L: np.ndarray, labels: np.ndarray) -> float:
    """The network's own cost of output activations a_L (n, n_classes) against labels (n,), averaged."""
    return float(COSTS[net.cost].value(a_L, one_hot(labels, a_L.shape[1], a_L.dtype)).mean())


def loss_and_accuracy(net, x: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(mean cost, accuracy) of ``net`` on float inputs x (n, n_in) in [0, 1] and labels (n,)."""
    a_L = net.predict_proba(x)
    return mean_cost(net, a_L, labels), float((a_L.argmax(axis=1) == labels).mean())


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, n: int) -> np.ndarray:
    """Counts (n, n): rows are true classes, columns predicted classes."""
    return np.bincount(labels * n + predicted, minlength=n * n).reshape(n, n)


def per_class(cm: np.ndarray, class_names) -> list[dict]:
    """Precision, recall, F1 and support of each class from a confusion matrix."""
    tp = np.diag(cm).astype(float)
    predicted, support = cm.sum(axis=0), cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return [{"label": i, "name": class_names[i], "precision": float(precision[i]), "recall": float(recall[i]),
             "f1": float(f1[i]), "support": int(support[i])} for i in range(len(cm))]


def most_confused(cm: np.ndarray, k: int = 5) -> list[tuple[int, int, int]]:
    """The k largest off-diagonal cells as (true, predicted, count), largest first."""
    off = cm.copy()
    np.fill_diagonal(off, 0)
    flat = np.argsort(off, axis=None, kind="stable")[::-1][:k]
    pairs = [(int(i // len(cm)), int(i % len(cm)), int(off.flat[i])) for i in flat]
    return [p for p in pairs if p[2] > 0]


def evaluate(model, images: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy, mean cost, confusion matrix (rows true), per-class scores and the most
    confused pairs of ``model`` on uint8 images (n, H, W) with labels (n,)."""
    probs = model.predict_proba(to_unit_float(images))
    n_classes = probs.shape[1]
    predicted = probs.argmax(axis=1)
    loss = mean_cost(model.network, probs, labels)
    cm = confusion_matrix(labels, predicted, n_classes)
    return {
        "accuracy": float((predicted == labels).mean()),
        "loss": loss,
        "n": int(len(labels)),
        "confusion_matrix": cm.tolist(),
        "per_class": per_class(cm, model.class_names),
        "most_confused": [{"true": t, "predicted": p, "count": c} for t, p, c in most_confused(cm)],
    }
