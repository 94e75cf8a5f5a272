"""Shared fixtures: small data sets and tiny trained models, built once per session."""

from __future__ import annotations

import resource
from pathlib import Path

import pytest

# A runaway allocation in a test (a property test finding a reader that believes a huge
# header) must fail that test with MemoryError, not get the whole run OOM-killed.
MEMORY_CAP = 16 << 30


def pytest_configure(config):
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = MEMORY_CAP if hard == resource.RLIM_INFINITY else min(MEMORY_CAP, hard)
    if soft == resource.RLIM_INFINITY or soft > cap:
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))

FASHION = Path("/usr/share/datasets/fashion-mnist")
SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "samples" / "user-digits"


@pytest.fixture(scope="session")
def embedded():
    """The embedded MNIST subset."""
    from digitnet.datasets import load_dataset

    return load_dataset("embedded")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, embedded):
    """A small ReLU/softmax model trained for 2 epochs on the embedded digits, saved to disk."""
    from digitnet.modelfile import save_model
    from digitnet.training import model_from_result, resolve_config, train

    config = resolve_config("default", hidden=(32,), epochs=2, augment=False)
    result = train(embedded, config)
    path = tmp_path_factory.mktemp("models") / "tiny.npz"
    save_model(model_from_result(result, embedded, config, "embedded"), path)
    return path


@pytest.fixture(autouse=True)
def _no_color(monkeypatch):
    """Tests see plain output unless they ask otherwise."""
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "100")
