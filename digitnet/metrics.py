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
    """Precision, recall, F1, support (true samples) and ``predicted`` (samples given that
    label) of each class from a confusion matrix; 0 where a ratio has nothing to divide by."""
    tp = np.diag(cm).astype(float)
    predicted, support = cm.sum(axis=0), cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return [{"label": i, "name": class_names[i], "precision": float(precision[i]), "recall": float(recall[i]),
             "f1": float(f1[i]), "support": int(support[i]), "predicted": int(predicted[i])} for i in range(len(cm))]


def averages(rows: list[dict]) -> dict:
    """scikit-learn's averages under a classification report: ``macro_avg``, the plain mean
    of precision, recall and F1 over the classes that occur (as a true or a predicted label),
    and ``weighted_avg``, their mean weighted by each class's support."""
    present = [r for r in rows if r["support"] or r["predicted"]]
    support = np.array([r["support"] for r in present], float)
    out = {}
    for key, weights in (("macro_avg", np.ones(len(present))), ("weighted_avg", support)):
        total = weights.sum()
        out[key] = {m: float(np.dot(weights, [r[m] for r in present]) / total) if total else 0.0
                    for m in ("precision", "recall", "f1")}
        out[key]["support"] = int(support.sum())
    return out


def most_confused(cm: np.ndarray, k: int = 5) -> list[tuple[int, int, int]]:
    """The k largest off-diagonal cells as (true, predicted, count), largest first."""
    off = cm.copy()
    np.fill_diagonal(off, 0)
    flat = np.argsort(off, axis=None, kind="stable")[::-1][:k]
    pairs = [(int(i // len(cm)), int(i % len(cm)), int(off.flat[i])) for i in flat]
    return [p for p in pairs if p[2] > 0]


def report(cm: np.ndarray, cost_sum: float, class_names) -> dict:
    """The evaluation report from a confusion matrix (rows true) and the summed cost:
    accuracy, mean cost, n, the matrix, per-class scores, their macro and weighted averages,
    and the most confused pairs."""
    n = int(cm.sum())
    rows = per_class(cm, class_names)
    return {
        "accuracy": float(np.trace(cm) / n) if n else 0.0,
        "loss": float(cost_sum / n) if n else 0.0,
        "n": n,
        "confusion_matrix": cm.tolist(),
        "per_class": rows,
        **averages(rows),
        "most_confused": [{"true": t, "predicted": p, "count": c} for t, p, c in most_confused(cm)],
    }


class Tally:
    """Metrics accumulated batch by batch, so an evaluation's memory does not grow with the
    number of samples: the confusion matrix and the summed cost."""

    def __init__(self, net, n_classes: int):
        self.net, self.cm, self.cost_sum = net, np.zeros((n_classes, n_classes), np.int64), 0.0

    def add(self, a_L: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Count output activations a_L (k, n_classes) against labels (k,); return the predicted labels."""
        predicted = a_L.argmax(axis=1)
        n = len(self.cm)
        self.cm += confusion_matrix(labels, predicted, n)
        a = a_L.astype(np.float64)                                 # summed over many batches: float64
        self.cost_sum += float(COSTS[self.net.cost].value(a, one_hot(labels, n, a.dtype)).sum())
        return predicted

    def report(self, class_names) -> dict:
        return report(self.cm, self.cost_sum, class_names)


def evaluate(model, images: np.ndarray, labels: np.ndarray, chunk: int = 8192) -> dict:
    """Accuracy, mean cost, confusion matrix (rows true), per-class scores with their macro
    and weighted averages, and the most confused pairs of ``model`` on uint8 images
    (n, H, W) with labels (n,)."""
    tally = Tally(model.network, len(model.class_names))
    for i in range(0, len(labels), chunk):
        tally.add(model.predict_proba(to_unit_float(images[i:i + chunk])), labels[i:i + chunk])
    return tally.report(model.class_names)
