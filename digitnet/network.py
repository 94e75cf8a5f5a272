"""The network and its math in plain NumPy: layers, activations, costs, forward pass, backprop.

Notation follows the backpropagation chapter (Nielsen; 3Blue1Brown ch. 3-4): layer l has
weights ``W`` (n_l, n_{l-1}) and biases ``b`` (n_l,); ``z = W @ a + b``, ``a = sigma(z)``.
Here a batch is a stack of rows, so one line computes ``z = a @ W.T + b`` for every sample
at once, shape (batch, n_l). The output layer's activation is fixed by the cost:
quadratic cost pairs with a sigmoid output (the video's network), cross-entropy with softmax.

All parameters live in one flat float32 vector; ``weights`` and ``biases`` are views into it.
That one buffer is what the numba kernels update in place, what momentum and L2 act on,
and what the model file stores. Nothing here imports numba: predict and inspect use this.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from digitnet.errors import UsageError


@dataclass(frozen=True)
class Activation:
    """A hidden-layer nonlinearity: ``fn(z)``, its derivative written in terms of its output
    ``prime(a)`` (so backprop needs no stored z), the kernel's code, and the init gain."""

    name: str
    code: int
    fn: Callable[[np.ndarray], np.ndarray]
    prime: Callable[[np.ndarray], np.ndarray]
    init: str  # "xavier" or "he"


def sigmoid(z: np.ndarray) -> np.ndarray:
    """The logistic function 1 / (1 + e^-z), overflow-safe."""
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax, shifted by the row max for stability. z: (batch, n)."""
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


ACTIVATIONS: dict[str, Activation] = {
    "sigmoid": Activation("sigmoid", 0, sigmoid, lambda a: a * (1 - a), "xavier"),
    "relu": Activation("relu", 1, lambda z: np.maximum(z, 0), lambda a: (a > 0).astype(a.dtype), "he"),
    "tanh": Activation("tanh", 2, np.tanh, lambda a: 1 - a * a, "xavier"),
}


@dataclass(frozen=True)
class Cost:
    """A cost with the output activation it pairs with; ``value`` is per sample, (batch,)."""

    name: str
    code: int
    output: Callable[[np.ndarray], np.ndarray]
    value: Callable[[np.ndarray, np.ndarray], np.ndarray]
    delta: Callable[[np.ndarray, np.ndarray], np.ndarray]


COSTS: dict[str, Cost] = {
    # C = ½‖a − y‖², a = σ(z):  δ_L = ∇_a C ⊙ σ'(z_L) = (a − y) ⊙ a(1 − a)
    "quadratic": Cost("quadratic", 0, sigmoid,
                      lambda a, y: 0.5 * ((a - y) ** 2).sum(axis=1),
                      lambda a, y: (a - y) * a * (1 - a)),
    # C = −Σ y ln a, a = softmax(z): the softmax Jacobian cancels ∂C/∂a, leaving δ_L = a − y
    "cross-entropy": Cost("cross-entropy", 1, softmax,
                          lambda a, y: -np.log(np.maximum((a * y).sum(axis=1), 1e-12)),
                          lambda a, y: a - y),
}


def resolve(registry: dict, name: str, what: str):
    """Look ``name`` up in a registry, raising UsageError that lists the allowed names."""
    try:
        return registry[name]
    except KeyError:
        raise UsageError(f"unknown {what} {name!r}; choose one of: {', '.join(registry)}") from None


def layer_offsets(sizes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, int]:
    """Offsets of each layer's W and b in the flat parameter vector, and its total length."""
    w_off, b_off, pos = [], [], 0
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        w_off.append(pos)
        pos += n_in * n_out
        b_off.append(pos)
        pos += n_out
    return np.array(w_off, np.int64), np.array(b_off, np.int64), pos


def one_hot(labels: np.ndarray, n: int, dtype=np.float32) -> np.ndarray:
    """Labels (batch,) -> one-hot targets y (batch, n)."""
    y = np.zeros((len(labels), n), dtype)
    y[np.arange(len(labels)), labels] = 1
    return y


class Network:
    """A fully connected network: ``sizes`` (n_0 inputs … n_L outputs), a hidden activation,
    a cost (which fixes the output activation) and one flat parameter vector."""

    def __init__(self, sizes, activation: str = "sigmoid", cost: str = "quadratic", params: np.ndarray | None = None):
        self.sizes = tuple(int(s) for s in sizes)
        if len(self.sizes) < 2 or min(self.sizes) < 1:
            raise UsageError(f"layer sizes must be at least two positive numbers, not {self.sizes}")
        self.activation = resolve(ACTIVATIONS, activation, "activation").name
        self.cost = resolve(COSTS, cost, "cost").name
        self.w_off, self.b_off, n = layer_offsets(self.sizes)
        if params is None:
            params = np.zeros(n, np.float32)
        if params.shape != (n,):
            raise ValueError(f"params must have shape ({n},), not {params.shape}")
        self.params = params

    @classmethod
    def init(cls, sizes, activation="sigmoid", cost="quadratic", seed: int = 0) -> Network:
        """A new network with seeded Xavier (sigmoid, tanh) or He (ReLU) weights, zero biases."""
        net = cls(sizes, activation, cost)
        rng = np.random.default_rng(seed)
        gain = ACTIVATIONS[net.activation].init
        for W, (n_in, n_out) in zip(net.weights, zip(net.sizes[:-1], net.sizes[1:])):
            std = np.sqrt(2.0 / n_in) if gain == "he" else np.sqrt(2.0 / (n_in + n_out))
            W[...] = rng.normal(0.0, std, W.shape)
        return net

    @property
    def n_layers(self) -> int:
        """Number of weight layers (L)."""
        return len(self.sizes) - 1

    @property
    def weights(self) -> list[np.ndarray]:
        """W_l views into ``params``, each (n_l, n_{l-1})."""
        return [self.params[o:o + n_in * n_out].reshape(n_out, n_in)
                for o, n_in, n_out in zip(self.w_off, self.sizes[:-1], self.sizes[1:])]

    @property
    def biases(self) -> list[np.ndarray]:
        """b_l views into ``params``, each (n_l,)."""
        return [self.params[o:o + n] for o, n in zip(self.b_off, self.sizes[1:])]

    def astype(self, dtype) -> Network:
        """A copy with parameters of ``dtype`` (float64 for gradient checks)."""
        return Network(self.sizes, self.activation, self.cost, self.params.astype(dtype))

    def copy(self) -> Network:
        """A copy that shares nothing with this network."""
        return Network(self.sizes, self.activation, self.cost, self.params.copy())

    def feedforward(self, x: np.ndarray) -> list[np.ndarray]:
        """All activations [a_0 = x, a_1, …, a_L] for a batch x (batch, n_0)."""
        sigma = ACTIVATIONS[self.activation].fn
        output = COSTS[self.cost].output
        activations = [x]
        for l, (W, b) in enumerate(zip(self.weights, self.biases), start=1):
            z = activations[-1] @ W.T + b                        # (batch, n_l)
            activations.append(output(z) if l == self.n_layers else sigma(z))
        return activations

    def predict_proba(self, x: np.ndarray, chunk: int = 8192) -> np.ndarray:
        """Output activations (batch, n_L) for inputs x (batch, n_0), in bounded-memory chunks.
        With cross-entropy these are softmax probabilities; with quadratic cost, sigmoid outputs."""
        x = np.asarray(x, self.params.dtype).reshape(len(x), -1)
        if x.shape[1] != self.sizes[0]:
            raise ValueError(f"inputs have {x.shape[1]} values each, the network takes {self.sizes[0]}")
        out = np.empty((len(x), self.sizes[-1]), self.params.dtype)
        for i in range(0, len(x), chunk):
            out[i:i + chunk] = self.feedforward(x[i:i + chunk])[-1]
        return out

    def cost_and_gradients(self, x: np.ndarray, labels: np.ndarray) -> tuple[float, list[np.ndarray], list[np.ndarray]]:
        """Mean cost over the batch and its gradients (nabla_w, nabla_b), by backpropagation.

        x: (m, n_0); labels: (m,). Gradients are averaged over the batch, same shapes as W, b.
        """
        sigma_prime = ACTIVATIONS[self.activation].prime
        cost = COSTS[self.cost]
        activations = self.feedforward(np.asarray(x, self.params.dtype))
        a_L = activations[-1]
        y = one_hot(labels, self.sizes[-1], a_L.dtype)
        m = len(x)
        delta = cost.delta(a_L, y) / m                           # δ_L (m, n_L), batch mean folded in
        nabla_w, nabla_b = [None] * self.n_layers, [None] * self.n_layers
        for l in range(self.n_layers - 1, -1, -1):               # layer l+1 in the book's 1-based count
            nabla_b[l] = delta.sum(axis=0)                       # ∂C/∂b = δ           (n_l,)
            nabla_w[l] = delta.T @ activations[l]                # ∂C/∂W = δ a_{l-1}ᵀ  (n_l, n_{l-1})
            if l > 0:                                            # δ_{l-1} = (Wᵀ δ) ⊙ σ'(z_{l-1})
                delta = (delta @ self.weights[l]) * sigma_prime(activations[l])
        return float(cost.value(a_L, y).mean()), nabla_w, nabla_b

    def flat_gradient(self, x: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
        """Cost and the gradient as one vector laid out like ``params``."""
        c, nw, nb = self.cost_and_gradients(x, labels)
        g = np.empty_like(self.params)
        for o, W in zip(self.w_off, nw):
            g[o:o + W.size] = W.ravel()
        for o, b in zip(self.b_off, nb):
            g[o:o + b.size] = b
        return c, g
