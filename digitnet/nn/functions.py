"""The registries of the math: activations (with their derivatives), costs, and the two small
helpers every path shares (pixels to floats, labels to one-hot).

Derivatives are written in terms of the activation's output ``a`` (scikit-learn's habit), so
backprop needs no stored ``z``: ``backward(a, g)`` turns ∂C/∂a into the book's
δ = ∂C/∂z = ∂C/∂a ⊙ σ'(z). Softmax is not element-wise, so its ``backward`` is the full
Jacobian-vector product a ⊙ (g − Σ g a).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from digitnet.errors import UsageError


def sigmoid(z: np.ndarray) -> np.ndarray:
    """The logistic function 1 / (1 + e^-z), overflow-safe."""
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def softmax(z: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, shifted by the max for stability. z: (batch, n)."""
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@dataclass(frozen=True)
class Activation:
    """A nonlinearity a = fn(z). ``backward(a, g)`` is δ = g ⊙ σ'(z) written with a;
    ``dlog(a, e_t)`` is ∂ ln a_t/∂z (for gradient ascent on an output); ``code`` is the
    dense kernel's number for it (-1: none); ``init`` the weight init of the layer before it;
    ``output``: usable as a network's output; ``distribution``: outputs already sum to 1."""

    name: str
    code: int
    fn: Callable[[np.ndarray], np.ndarray]
    backward: Callable[[np.ndarray, np.ndarray], np.ndarray]
    init: str                       # "he" or "xavier"
    hidden: bool = True
    output: bool = False
    distribution: bool = False
    dlog: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None


def _softmax_backward(a: np.ndarray, g: np.ndarray) -> np.ndarray:
    # ∂a_i/∂z_j = a_i (1[i=j] − a_j), so δ_j = Σ_i g_i a_i (1[i=j] − a_j) = a_j (g_j − Σ_i g_i a_i)
    return a * (g - (g * a).sum(axis=-1, keepdims=True))


ACTIVATIONS: dict[str, Activation] = {
    "sigmoid": Activation("sigmoid", 0, sigmoid, lambda a, g: g * a * (1 - a), "xavier", output=True,
                          dlog=lambda a, e: e * (1 - a)),                   # ∂ ln σ(z_t)/∂z = e_t (1 − a)
    "relu": Activation("relu", 1, lambda z: np.maximum(z, 0), lambda a, g: g * (a > 0), "he"),
    "tanh": Activation("tanh", 2, np.tanh, lambda a, g: g * (1 - a * a), "xavier"),
    "softmax": Activation("softmax", -1, softmax, _softmax_backward, "xavier", hidden=False, output=True,
                          distribution=True, dlog=lambda a, e: e - a),       # ∂ ln a_t/∂z = e_t − a
}
HIDDEN_ACTIVATIONS = tuple(name for name, act in ACTIVATIONS.items() if act.hidden)


@dataclass(frozen=True)
class Cost:
    """A cost C(a, y) per sample (batch,), its gradient ∂C/∂a, the output activation it is
    used with by default, and the output whose pairing lets δ_L be written as a − y."""

    name: str
    code: int                       # the dense kernel's number for it
    value: Callable[[np.ndarray, np.ndarray], np.ndarray]
    grad: Callable[[np.ndarray, np.ndarray], np.ndarray]
    output: str
    canonical: str


COSTS: dict[str, Cost] = {
    # C = ½‖a − y‖²: ∂C/∂a = a − y; with a sigmoid output δ_L = (a − y) ⊙ a(1 − a) (backward does it)
    "quadratic": Cost("quadratic", 0, lambda a, y: 0.5 * ((a - y) ** 2).sum(axis=1), lambda a, y: a - y,
                      "sigmoid", ""),
    # C = −Σ y ln a: with a = softmax(z) the Jacobian cancels the 1/a of ∂C/∂a, leaving δ_L = a − y
    "cross-entropy": Cost("cross-entropy", 1,
                          lambda a, y: -np.log(np.maximum((a * y).sum(axis=1), 1e-12)),
                          lambda a, y: -y / np.maximum(a, 1e-12), "softmax", "softmax"),
}
# the names other libraries use for the same costs
COST_ALIASES = {"mse": "quadratic", "squared-error": "quadratic", "log-loss": "cross-entropy",
                "crossentropy": "cross-entropy", "ce": "cross-entropy"}


def resolve(registry: dict, name: str, what: str, aliases: dict | None = None):
    """Look ``name`` up in a registry (or its aliases), raising UsageError that lists the
    allowed names."""
    name = (aliases or {}).get(name, name)
    try:
        return registry[name]
    except (KeyError, TypeError):
        raise UsageError(f"unknown {what} {name!r}; choose one of: {', '.join(registry)}") from None


def one_hot(labels: np.ndarray, n: int, dtype=np.float32) -> np.ndarray:
    """Labels (batch,) -> one-hot targets y (batch, n)."""
    y = np.zeros((len(labels), n), dtype)
    y[np.arange(len(labels)), labels] = 1
    return y


def to_unit_float(images: np.ndarray) -> np.ndarray:
    """uint8 pixels (any shape) as float32 in [0, 1]: one copy, scaled in place."""
    x = np.asarray(images).astype(np.float32)
    x /= np.float32(255)
    return x
