"""What `make train` and `make test` rely on beyond the package: the shipped typed digits
(scripts/build_fonts.py) that make training reproducible on any machine, and the suite's rule
that in CI a missing data set fails instead of skipping."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESOURCE = ROOT / "digitnet" / "resources" / "fonts-digits.npz"


def test_the_fonts_set_comes_from_the_package_not_from_this_machine(tmp_path):
    """`--data embedded+fonts` (make train's data) reads the shipped file only: in a fresh
    interpreter with an empty home (no font cache) nothing renders fonts, and the set is the
    file's bytes exactly."""
    code = ("import sys\n"
            "from digitnet.datasets import load_dataset\n"
            "d = load_dataset('embedded+fonts')\n"
            "print(d.checksum, len(d.train_labels), 'digitnet.synth' in sys.modules, 'PIL.ImageFont' in sys.modules)\n")
    env = {**os.environ, "HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    checksum, n, synth, fonts = r.stdout.split()
    assert (n, synth, fonts) == ("11000", "False", "False")
    assert not (tmp_path / "cache").exists() and not list(tmp_path.iterdir())
    # the same checksum computed here from the two shipped files, in the order datasets uses
    with np.load(ROOT / "digitnet" / "resources" / "mnist-embedded.npz") as e, np.load(RESOURCE) as f:
        train_images = np.concatenate([e["train_images"], f["train_images"]])
        train_labels = np.concatenate([e["train_labels"], f["train_labels"]]).astype(np.int64)
        parts = [train_images, train_labels, e["test_images"], e["test_labels"].astype(np.int64)]
    h = hashlib.sha256()
    for a in parts:
        h.update(str(a.shape).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    assert checksum == "sha256:" + h.hexdigest()[:16]


def test_the_shipped_model_was_trained_on_the_shipped_data():
    """The README's figures for `make train` are about this data: the shipped default model
    records the checksum of the data set it was trained on, and it is today's."""
    from digitnet.datasets import load_dataset
    from digitnet.modelfile import load_model

    model = load_model(ROOT / "models" / "digitnet.npz")
    assert model.dataset["spec"] == "embedded+fonts"
    assert model.dataset["checksum"] == load_dataset("embedded+fonts").checksum
    make = (ROOT / "Makefile").read_text()
    assert "--data embedded+fonts --out models/digitnet.npz" in make
    train_rule = make.split("\ntrain:")[1].split("\n\n")[0]
    assert "fonts" not in train_rule.split("##")[0]                  # make train never re-renders the fonts


def _pytest(tmp_path, ci: str | None):
    """Run one Fashion-MNIST test of the suite with the data set 'missing'."""
    env = {**os.environ, "DIGITNET_TEST_FASHION": str(tmp_path / "no-fashion")}
    env.pop("CI", None)
    if ci is not None:
        env["CI"] = ci
    test = ROOT / "tests" / "test_idx.py"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "fashion", str(test)],
                          capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)


def test_a_missing_data_set_skips_locally_but_fails_in_ci(tmp_path):
    local = _pytest(tmp_path, None)
    assert local.returncode == 0 and "skipped" in local.stdout and "failed" not in local.stdout, local.stdout
    ci = _pytest(tmp_path, "true")
    assert ci.returncode == 1 and "CI=true: a missing data set fails" in ci.stdout, ci.stdout


def test_the_fashion_fixture_fails_in_ci(tmp_path):
    test = tmp_path / "test_uses_fixture.py"
    test.write_text("def test_it(fashion_mnist):\n    assert fashion_mnist.is_dir()\n")
    (tmp_path / "conftest.py").write_text((ROOT / "tests" / "conftest.py").read_text())
    env = {**os.environ, "DIGITNET_TEST_FASHION": str(tmp_path / "none"), "CI": "true"}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test)],
                       capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert r.returncode == 1 and "CI=true: Fashion-MNIST is not installed" in r.stdout, r.stdout
    env.pop("CI")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test)],
                       capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert r.returncode == 0 and "1 skipped" in r.stdout, r.stdout
