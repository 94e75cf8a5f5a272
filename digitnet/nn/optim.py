"""Optimizers: how a gradient becomes a step. They see only flat vectors — the parameters,
their gradient, and a mask of which entries are weights (decayed) and which are biases —
so any layer's parameters are updated the same way, and the network never knows which
optimizer runs (scikit-learn's _stochastic_optimizers does the same). These NumPy steps
are the reference; training takes ``digitnet.optim_kernels``' compiled ones, which give
the same bits.
"""

from __future__ import annotations

import numpy as np


class SGD:
    """Stochastic gradient descent with momentum μ and L2 weight decay λ on weights:
    v <- μ v − η (∇C + λ W);  θ <- θ + v.  With μ = 0 this is θ <- θ − η (∇C + λ W)."""

    name = "sgd"

    def __init__(self, n: int, momentum: float = 0.0, l2: float = 0.0, decay_mask: np.ndarray | None = None,
                 dtype=np.float32):
        self.momentum, self.l2 = dtype(momentum), dtype(l2)
        self.mask = decay_mask if decay_mask is not None else np.ones(n, dtype)
        self.velocity = np.zeros(n, dtype)
        self._l2_mask = self.l2 * self.mask          # λ on weights, 0 on biases
        self._t = np.empty(n, dtype)                 # scratch: a step allocates nothing

    def step(self, params: np.ndarray, grad: np.ndarray, lr: float) -> None:
        """Update ``params`` in place from ``grad`` (the batch-mean gradient) at rate ``lr``."""
        lr = params.dtype.type(lr)
        t = self._t
        if self.l2:
            np.multiply(self._l2_mask, params, out=t)     # λ W
            t += grad                                     # ∇C + λ W
        else:
            t[:] = grad
        t *= lr                                           # η (∇C + λ W)
        if self.momentum:
            self.velocity *= self.momentum
            self.velocity -= t
            params += self.velocity
        else:
            params -= t


class Adam:
    """Adam (Kingma & Ba) with weight decay applied as AdamW does, apart from the gradient:
    m <- β1 m + (1 − β1) ∇;  v <- β2 v + (1 − β2) ∇²;  m̂ = m/(1 − β1ᵗ), v̂ = v/(1 − β2ᵗ);
    θ <- θ − η (m̂ / (√v̂ + ε) + λ W)."""

    name = "adam"

    def __init__(self, n: int, l2: float = 0.0, decay_mask: np.ndarray | None = None, beta1: float = 0.9,
                 beta2: float = 0.999, eps: float = 1e-8, dtype=np.float32):
        self.l2, self.beta1, self.beta2, self.eps = l2, beta1, beta2, eps
        self.mask = decay_mask if decay_mask is not None else np.ones(n, dtype)
        self.m, self.v, self.t = np.zeros(n, dtype), np.zeros(n, dtype), 0
        self._l2_mask = self.l2 * self.mask          # λ on weights, 0 on biases
        self._a, self._b = np.empty(n, dtype), np.empty(n, dtype)    # scratch: a step allocates nothing

    def step(self, params: np.ndarray, grad: np.ndarray, lr: float) -> None:
        """Update ``params`` in place from ``grad`` at rate ``lr``."""
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        a, b = self._a, self._b
        self.m *= b1
        np.multiply(grad, 1 - b1, out=a)
        self.m += a                                           # m = β1 m + (1 − β1) ∇
        self.v *= b2
        np.multiply(grad, 1 - b2, out=a)
        a *= grad
        self.v += a                                           # v = β2 v + (1 − β2) ∇²
        np.multiply(self.v, 1.0 / (1 - b2 ** self.t), out=a)
        np.sqrt(a, out=a)
        a += self.eps                                         # √v̂ + ε
        np.multiply(self.m, 1.0 / (1 - b1 ** self.t), out=b)
        b /= a                                                # m̂ / (√v̂ + ε)
        if self.l2:
            np.multiply(self._l2_mask, params, out=a)
            b += a                                            # … + λ W
        b *= params.dtype.type(lr)
        params -= b


# name -> factory(n, momentum, l2, decay_mask); Adam keeps its own moments, so it ignores momentum
OPTIMIZERS = {
    "sgd": lambda n, momentum, l2, mask: SGD(n, momentum, l2, mask),
    "adam": lambda n, momentum, l2, mask: Adam(n, l2, mask),
}
