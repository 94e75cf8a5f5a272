"""digitnet.nn.optim: SGD with momentum and Adam (AdamW-style decay) against steps worked by
hand, one scalar at a time; weight decay reaches weights only."""

from __future__ import annotations

import math

import numpy as np
import pytest

from digitnet.nn.optim import OPTIMIZERS, SGD, Adam

THETA0 = [0.5, -1.0, 2.0]          # two weights and a bias
MASK = [1.0, 1.0, 0.0]             # decay on the weights only
G1 = [0.2, -0.4, 1.0]
G2 = [-0.1, 0.3, 0.5]


def test_sgd_with_momentum_two_steps_by_hand():
    """v <- μ v − η (∇ + λ W);  θ <- θ + v, with μ = 0.9, η = 0.5, λ = 0.1."""
    params = np.array(THETA0)
    opt = SGD(3, momentum=0.9, l2=0.1, decay_mask=np.array(MASK), dtype=np.float64)
    opt.step(params, np.array(G1), 0.5)
    # step 1: v = −0.5 (g + 0.1 θ·mask)
    #   w1: −0.5 (0.2 + 0.05)  = −0.125   -> 0.375
    #   w2: −0.5 (−0.4 − 0.1)  =  0.25    -> −0.75
    #   b : −0.5 (1.0)         = −0.5     -> 1.5
    assert params.tolist() == pytest.approx([0.375, -0.75, 1.5], abs=1e-15)
    opt.step(params, np.array(G2), 0.5)
    # step 2: v = 0.9 v − 0.5 (g + 0.1 θ·mask)
    #   w1: −0.1125 − 0.5 (−0.1 + 0.0375) = −0.1125 + 0.03125 = −0.08125 -> 0.29375
    #   w2:  0.225  − 0.5 (0.3 − 0.075)   =  0.225 − 0.1125   =  0.1125  -> −0.6375
    #   b : −0.45   − 0.5 (0.5)           = −0.7                         -> 0.8
    assert params.tolist() == pytest.approx([0.29375, -0.6375, 0.8], abs=1e-15)
    assert opt.velocity.tolist() == pytest.approx([-0.08125, 0.1125, -0.7], abs=1e-15)


def test_sgd_without_momentum_is_the_plain_step_and_float32_by_default():
    params = np.array(THETA0, np.float32)
    opt = SGD(3, l2=0.1, decay_mask=np.array(MASK, np.float32))
    opt.step(params, np.array(G1, np.float32), 0.5)
    assert params.dtype == np.float32 and opt.velocity.dtype == np.float32
    # θ − η (g + λ θ mask): same first step as with momentum
    assert params.tolist() == pytest.approx([0.375, -0.75, 1.5], abs=1e-7)
    opt.step(params, np.array(G2, np.float32), 0.5)
    # no memory of step 1: w1: 0.375 − 0.5 (−0.1 + 0.0375) = 0.40625; w2: −0.75 − 0.5 (0.3 − 0.075) = −0.8625
    assert params.tolist() == pytest.approx([0.40625, -0.8625, 1.25], abs=1e-7)


def test_adam_two_steps_by_hand_with_decay_on_weights_only():
    """m <- β1 m + (1−β1) g;  v <- β2 v + (1−β2) g²;  θ <- θ − η (m̂/(√v̂ + ε) + λ θ·mask),
    with the decay outside the moments (AdamW), worked one scalar at a time."""
    lr, l2, b1, b2, eps = 0.01, 0.1, 0.9, 0.999, 1e-8
    params = np.array(THETA0)
    opt = Adam(3, l2=l2, decay_mask=np.array(MASK), beta1=b1, beta2=b2, eps=eps, dtype=np.float64)
    opt.step(params, np.array(G1), lr)
    # step 1: m̂ = g and v̂ = g², so the step is η (sign g + λ θ·mask), up to ε:
    #   w1: 0.5 − 0.01 (1 + 0.05) = 0.4895;  w2: −1 − 0.01 (−1 − 0.1) = −0.989;  b: 2 − 0.01 = 1.99
    assert params.tolist() == pytest.approx([0.4895, -0.989, 1.99], abs=1e-9)
    expected = []
    for k in range(3):
        g1, g2, theta = G1[k], G2[k], THETA0[k]
        m = (1 - b1) * g1
        v = (1 - b2) * g1 * g1
        theta -= lr * ((m / (1 - b1)) / (math.sqrt(v / (1 - b2)) + eps) + l2 * MASK[k] * theta)
        m = b1 * m + (1 - b1) * g2
        v = b2 * v + (1 - b2) * g2 * g2
        theta -= lr * ((m / (1 - b1 ** 2)) / (math.sqrt(v / (1 - b2 ** 2)) + eps) + l2 * MASK[k] * theta)
        expected.append(theta)
    opt.step(params, np.array(G2), lr)
    assert params.tolist() == pytest.approx(expected, abs=1e-12)
    # the numbers, for the record: w1 = 0.4895 − 0.01 (0.008/0.19 / √(4.996e-5/0.001999) + 0.04895)
    assert expected[0] == pytest.approx(0.4895 - 0.01 * (0.008 / 0.19 / math.sqrt(4.996e-5 / 0.001999) + 0.04895))
    assert opt.t == 2
    # decay is not part of the gradient the moments see: m holds the raw gradients only
    assert opt.m.tolist() == pytest.approx([0.9 * 0.1 * g1 + 0.1 * g2 for g1, g2 in zip(G1, G2)], abs=1e-15)


def test_adam_float32_params_follow_the_float64_steps():
    p32, p64 = np.array(THETA0, np.float32), np.array(THETA0)
    o32 = Adam(3, l2=0.1, decay_mask=np.array(MASK, np.float32))
    o64 = Adam(3, l2=0.1, decay_mask=np.array(MASK), dtype=np.float64)
    for g in (G1, G2, G1):
        o32.step(p32, np.array(g, np.float32), 0.01)
        o64.step(p64, np.array(g), 0.01)
    assert p32.dtype == np.float32
    np.testing.assert_allclose(p32, p64, rtol=1e-6)


def test_optimizer_registry():
    mask = np.array(MASK, np.float32)
    sgd = OPTIMIZERS["sgd"](3, 0.9, 1e-4, mask)
    adam = OPTIMIZERS["adam"](3, 0.9, 1e-4, mask)
    assert isinstance(sgd, SGD) and sgd.momentum == np.float32(0.9) and sgd.mask is mask
    assert isinstance(adam, Adam) and adam.l2 == 1e-4 and adam.beta1 == 0.9 and adam.mask is mask
    assert set(OPTIMIZERS) == {"sgd", "adam"}
