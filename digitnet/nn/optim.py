"""Optimizers: how a gradient becomes a step. They see only flat vectors — the parameters,
their gradient, and a mask of which entries are weights (decayed) and which are biases —
so any layer's parameters are updated the same way, and the network never knows which
optimizer runs (scikit-learn's _stochastic_optimizers does the same).
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

    def step(self, params: np.ndarray, grad: np.ndarray, lr: float) -> None:
        """Update ``params`` in place from ``grad`` (the batch-mean gradient) at rate ``lr``."""
        lr = params.dtype.type(lr)
        if self.l2:
            grad = grad + self.l2 * self.mask * params
        if self.momentum:
            self.velocity *= self.momentum
            self.velocity -= lr * grad
            params += self.velocity
        else:
            params -= lr * grad


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

    def step(self, params: np.ndarray, grad: np.ndarray, lr: float) -> None:
        """Update ``params`` in place from ``grad`` at rate ``lr``."""
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        self.m *= b1
        self.m += (1 - b1) * grad
        self.v *= b2
        self.v += (1 - b2) * grad * grad
        m_hat_scale = 1.0 / (1 - b1 ** self.t)
        v_hat_scale = 1.0 / (1 - b2 ** self.t)
        update = (self.m * m_hat_scale) / (np.sqrt(self.v * v_hat_scale) + self.eps)
        if self.l2:
            update += self.l2 * self.mask * params
        params -= params.dtype.type(lr) * update.astype(params.dtype, copy=False)


# name -> factory(n, momentum, l2, decay_mask); Adam keeps its own moments, so it ignores momentum
OPTIMIZERS = {
    "sgd": lambda n, momentum, l2, mask: SGD(n, momentum, l2, mask),
    "adam": lambda n, momentum, l2, mask: Adam(n, l2, mask),
}
