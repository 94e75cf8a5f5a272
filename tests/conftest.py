"""Shared fixtures: small data sets and tiny trained models, built once per session."""

from __future__ import annotations

import os
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

# Debian's dataset-fashion-mnist; DIGITNET_TEST_FASHION points elsewhere (the suite's own test
# of the CI rule below uses it to pretend the data set is missing).
FASHION = Path(os.environ.get("DIGITNET_TEST_FASHION", "/usr/share/datasets/fashion-mnist"))
SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "samples" / "user-digits"


def in_ci() -> bool:
    """True under CI (CI=true, as CI services set it): missing set-up is a failure there."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


MISSING_FASHION = (f"Fashion-MNIST is not installed ({FASHION}; Debian's dataset-fashion-mnist, "
                   "which .ci/run installs)")


@pytest.fixture(scope="session")
def fashion_mnist() -> Path:
    """The Fashion-MNIST IDX folder. Where it is not installed the test is skipped, except
    with CI=true, where a missing data set fails the test instead of hiding it."""
    if not FASHION.is_dir():
        if in_ci():
            pytest.fail(f"CI=true: {MISSING_FASHION}", pytrace=False)
        pytest.skip(MISSING_FASHION)
    return FASHION


@pytest.fixture(scope="session")
def samples() -> Path:
    """The shared person-made digits (../shared/samples/user-digits, beside the checkout).
    Where they are not there (a clone elsewhere) the test is skipped, except with CI=true,
    where missing inputs fail the test instead of hiding it."""
    if not SAMPLES.is_dir():
        why = f"the shared samples are not beside the checkout ({SAMPLES})"
        if in_ci():
            pytest.fail(f"CI=true: {why}", pytrace=False)
        pytest.skip(why)
    return SAMPLES


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """With CI=true, any test skipped because Fashion-MNIST is missing (whatever spelling its
    skip reason uses, e.g. a skipif on FASHION.is_dir()) is reported as failed."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and in_ci() and not FASHION.is_dir():
        reason = str(report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr)
        if "fashion" in reason.lower():
            report.outcome = "failed"
            report.longrepr = f"CI=true: a missing data set fails, it does not skip ({reason})"
    elif report.failed and report.when == "setup" and in_ci() and MISSING_FASHION in str(report.longrepr):
        # the fashion_mnist fixture's failure: said as the rule says it, whichever spelling failed
        report.longrepr = f"CI=true: a missing data set fails, it does not skip ({report.longrepr})"


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
