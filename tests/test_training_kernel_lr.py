"""The learning rate each epoch's schedule gives reaches the fused dense kernel itself
(``kernels.train_batches``), not only the history: the rate is read at the kernel's door and
compared with the schedules' formulas written out here."""

from __future__ import annotations

import math

import numpy as np
import pytest

from digitnet import kernels
from digitnet.datasets import make_dataset
from digitnet.training import resolve_config, train

LR = 0.1
EPOCHS = 4
BY_HAND = {   # the rate of epochs 0..3 of 4, from the schedules' definitions
    "constant": [LR] * 4,
    "step": [LR, LR, LR * 0.1, LR * 0.01],             # ×0.1 at half the run, again at three quarters
    "cosine": [LR * 0.5 * (1 + math.cos(math.pi * e / 4)) for e in range(4)],
}


@pytest.mark.parametrize("schedule", sorted(BY_HAND))
def test_each_epochs_scheduled_rate_reaches_the_kernel(embedded, monkeypatch, schedule):
    data = make_dataset("few", embedded.train_images[:400], embedded.train_labels[:400],
                        embedded.test_images[:100], embedded.test_labels[:100])
    calls = []                                              # (first batch, lr) of every kernel call
    real = kernels.train_batches

    def spy(*args):
        calls.append((int(args[12]), float(args[14])))      # first, lr: train_batches' 13th and 15th arguments
        return real(*args)

    monkeypatch.setattr(kernels, "train_batches", spy)
    result = train(data, resolve_config("default", hidden=(16,), epochs=EPOCHS, augment=False, lr=LR,
                                        schedule=schedule, batch_size=32))
    per_epoch = [lr for first, lr in calls if first == 0]   # each epoch's first call
    assert len(per_epoch) == EPOCHS, "the dense SGD run must go through the fused kernel"
    assert per_epoch == pytest.approx(np.float32(BY_HAND[schedule]).tolist(), rel=1e-6)
    assert all(lr == next(r for f, r in calls[i::-1] if f == 0) for i, (_, lr) in enumerate(calls))
    assert [h["lr"] for h in result.history] == pytest.approx(BY_HAND[schedule], rel=1e-6)
