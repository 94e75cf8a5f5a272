"""The wheel carries the embedded digits and the shipped models, and an installed copy finds
its default model without a checkout."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(ROOT)],
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        pytest.skip(f"could not build a wheel here (no build backend reachable?): {r.stderr.strip()[-300:]}")
    return next(out.glob("digitnet-*.whl"))


def test_wheel_contents(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"digitnet/models/digitnet.npz", "digitnet/models/mnist-3b1b.npz",
            "digitnet/resources/mnist-embedded.npz", "digitnet/cli/__init__.py"} <= names


def test_installed_copy_uses_its_own_default_model(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = ("from digitnet.modelfile import default_model_path, load_model\n"
            "p = default_model_path(); m = load_model(p); print(p); print(m.network.n_inputs, m.network.n_outputs)")
    env = {k: v for k, v in os.environ.items() if k != "DIGITNET_MODEL"}
    env["PYTHONPATH"] = str(site)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    path, sizes = r.stdout.splitlines()
    assert Path(path).is_relative_to(site) and sizes == "784 10"
