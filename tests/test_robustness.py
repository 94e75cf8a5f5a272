"""digitnet under hostile conditions: a read-only install, a shared numba cache, kill -9 in
the middle of a save, a diverging run, and --out paths that need creating or cannot be.

Everything runs the real program in subprocesses on a 40-image data set. (Ctrl-C and SIGTERM
during training are covered by tests/test_training.py.)
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
PYTHON = ROOT / ".venv" / "bin" / "python"
DIGITNET = ROOT / ".venv" / "bin" / "digitnet"
TINY = ["--hidden", "8", "--epochs", "1", "--no-augment"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """40 train / 10 test random 28×28 images: enough to train one epoch in a blink."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("robust") / "tiny.npz"
    np.savez(path, train_images=rng.integers(0, 256, (40, 28, 28), dtype=np.uint8), train_labels=rng.integers(0, 10, 40),
             test_images=rng.integers(0, 256, (10, 28, 28), dtype=np.uint8), test_labels=rng.integers(0, 10, 10))
    return path


def run(args, env=None, timeout=180, **kw):
    e = {**os.environ, "NO_COLOR": "1", **(env or {})}
    return subprocess.run([str(DIGITNET), *map(str, args)], capture_output=True, text=True, timeout=timeout, env=e, **kw)


def load(path):
    from digitnet.modelfile import load_model

    return load_model(path)


# --- a read-only install -------------------------------------------------------------------

def _can_mount_read_only(tmp: Path) -> bool:
    probe = tmp / "probe"
    probe.mkdir()
    r = subprocess.run(["unshare", "--mount", "sh", "-c",
                        f"mount --bind {probe} {probe} && mount -o remount,bind,ro {probe} {probe} && ! touch {probe}/x"],
                       capture_output=True)
    return r.returncode == 0


@pytest.fixture(scope="module")
def read_only_install(tmp_path_factory):
    """The package copied to a directory the program cannot write, and the command prefix
    that runs ``python -m digitnet`` from it: root writes through file modes, so as root the
    copy is bind-mounted read-only in a private mount namespace; otherwise chmod a-w."""
    base = tmp_path_factory.mktemp("ro-install")
    site = base / "site"
    shutil.copytree(ROOT / "digitnet", site / "digitnet", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    python = [str(PYTHON), "-m", "digitnet"]
    if os.geteuid() == 0:
        if not shutil.which("unshare") or not _can_mount_read_only(base):
            pytest.skip("running as root without mount namespaces: cannot make a directory read-only")
        prefix = ["unshare", "--mount", "sh", "-c",
                  f'mount --bind {site} {site} && mount -o remount,bind,ro {site} {site} && exec "$@"', "sh", *python]
    else:
        for p in [site, *site.rglob("*")]:
            p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
        prefix = python
    yield site, prefix
    if os.geteuid() != 0:
        for p in [site, *site.rglob("*")]:
            p.chmod(p.stat().st_mode | stat.S_IWUSR)


def _ro_env(site: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "XDG_CACHE_HOME", "DIGITNET_MODEL")}
    env.update(PYTHONPATH=str(site), NO_COLOR="1", **extra)
    return env


def _nothing_written_under(site: Path) -> list[str]:
    return [str(p) for p in site.rglob("*") if p.suffix in (".nbi", ".nbc", ".pyc", ".tmp")]


def test_read_only_install_runs_from_the_copy(read_only_install):
    """The tests below really run the copy, and the copy really cannot be written."""
    site, prefix = read_only_install
    code = ("import digitnet, pathlib; print(digitnet.__file__)\n"
            "try: pathlib.Path(digitnet.__file__).with_name('probe').write_text('x')\n"
            "except OSError: print('read-only')")
    r = subprocess.run([*prefix[:-2], "-c", code], capture_output=True, text=True, env=_ro_env(site), timeout=60,
                       cwd=site.parent)      # not the checkout: python -m/-c put the cwd first on sys.path
    assert r.stdout.split() == [str(site / "digitnet" / "__init__.py"), "read-only"], r.stderr


@pytest.mark.parametrize("home", ["writable", "unwritable"])
def test_read_only_install_still_trains(read_only_install, tiny_data, tmp_path, home):
    """NUMBA_CACHE_DIR unset; the cache goes to the user cache directory, or, when HOME is
    unwritable too (under a regular file: refused even for root), to a temporary one."""
    site, prefix = read_only_install
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    if home == "writable":
        env = _ro_env(site, HOME=str(tmp_path / "home"), TMPDIR=str(tmpdir))
        (tmp_path / "home").mkdir()
    else:
        (tmp_path / "a-file").write_text("not a directory")
        env = _ro_env(site, HOME=str(tmp_path / "a-file" / "home"), XDG_CACHE_HOME=str(tmp_path / "a-file" / "cache"),
                      TMPDIR=str(tmpdir))
    out = tmp_path / "m.npz"
    r = subprocess.run([*prefix, "train", "--data", tiny_data, *TINY, "--out", out, "--json"],
                       capture_output=True, text=True, env={k: str(v) for k, v in env.items()}, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert load(out).network.mlp()[0] == (784, 8, 10)
    assert _nothing_written_under(site) == []
    cache = tmp_path / "home" / ".cache" / "digitnet" / "numba" if home == "writable" else tmpdir
    assert list(cache.rglob("*.nbi")), f"numba cache not in {cache}"


def test_unwritable_numba_cache_dir_is_not_fatal(read_only_install, tiny_data, tmp_path):
    site, prefix = read_only_install
    (tmp_path / "a-file").write_text("not a directory")
    bad = tmp_path / "a-file"
    env = _ro_env(site, NUMBA_CACHE_DIR=str(bad / "numba"), HOME=str(bad / "home"), XDG_CACHE_HOME=str(bad / "cache"),
                  TMPDIR=str(tmp_path))
    r = subprocess.run([*prefix, "train", "--data", str(tiny_data), *TINY, "--out", str(tmp_path / "m.npz")],
                       capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr


def test_two_trainings_at_once_share_one_cache(tiny_data, tmp_path):
    """Both compile into the same empty NUMBA_CACHE_DIR at the same time; both must succeed,
    and a third run afterwards loads what they cached."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache"), "NO_COLOR": "1"}
    procs = [subprocess.Popen([str(DIGITNET), "train", "--data", str(tiny_data), *TINY, "--seed", str(i),
                               "--out", str(tmp_path / f"m{i}.npz")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err
    assert load(tmp_path / "m0.npz").config["seed"] == 0 and load(tmp_path / "m1.npz").config["seed"] == 1
    assert list((tmp_path / "cache").rglob("*.nbi"))
    r = run(["train", "--data", tiny_data, *TINY, "--out", tmp_path / "m2.npz"], env={"NUMBA_CACHE_DIR": str(tmp_path / "cache")})
    assert r.returncode == 0, r.stderr


# --- kill -9 during a save -------------------------------------------------------------------

def test_kill_9_during_save_leaves_the_old_file_or_the_new_one(tiny_data, tmp_path):
    """Start trainings that overwrite one model file and SIGKILL each at a random moment,
    mostly while its temporary file is being written (a 1.7 MB network, so the save takes a
    while). After each kill the file must be the old bytes or a model that loads."""
    out = tmp_path / "m.npz"
    r = run(["train", "--data", tiny_data, *TINY, "--out", out])
    assert r.returncode == 0, r.stderr
    rng = random.Random(6)
    in_save = left = 0
    for i in range(6):
        old = out.read_bytes()
        p = subprocess.Popen([str(DIGITNET), "train", "--data", str(tiny_data), "--hidden", "512", "--epochs", "1",
                              "--no-augment", "--seed", str(i + 1), "--out", str(out), "--force"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "NO_COLOR": "1"})
        if i % 4 == 3:                      # a random moment of the whole run
            time.sleep(rng.uniform(0.2, 1.5))
        else:                               # a random moment of the save itself
            deadline = time.monotonic() + 60
            while not list(tmp_path.glob(".m.npz.*.tmp")) and p.poll() is None and time.monotonic() < deadline:
                time.sleep(0.001)
            time.sleep(rng.uniform(0, 0.02))
        in_save += bool(list(tmp_path.glob(".m.npz.*.tmp")))
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=60)
        left += len(list(tmp_path.glob(".m.npz.*.tmp")))
        if out.read_bytes() != old:
            assert load(out).config["seed"] == i + 1, "a new file that is not the new model"
        # what a kill -9 leaves behind is cleaned up by the next save of that name (the next
        # round, and the run below)
    assert in_save >= 2, "the kills never landed inside a save: the test did not test anything"
    r = run(["train", "--data", tiny_data, *TINY, "--out", out, "--force"])
    assert r.returncode == 0, r.stderr
    assert left >= 1 and sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]


# --- training faults and --out -----------------------------------------------------------------

def test_diverging_run_says_lower_lr_and_keeps_the_old_model(tiny_data, tmp_path):
    out = tmp_path / "keep.npz"
    r = run(["train", "--data", tiny_data, *TINY, "--out", out])
    assert r.returncode == 0, r.stderr
    before = out.read_bytes()
    r = run(["train", "--data", tiny_data, "--hidden", "8", "--epochs", "3", "--batch-size", "4", "--no-augment",
             "--lr", "1e6", "--out", out, "--force"])
    assert r.returncode == 1 and "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("digitnet: error:")]
    assert len(errors) == 1 and "non-finite" in errors[0] and "lower --lr" in errors[0], r.stderr
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.npz"]


def test_out_into_a_missing_directory_creates_it(tiny_data, tmp_path):
    out = tmp_path / "new" / "deeper" / "m.npz"
    r = run(["train", "--data", tiny_data, *TINY, "--out", out])
    assert r.returncode == 0, r.stderr
    assert load(out).network.mlp()[0] == (784, 8, 10)


def test_out_under_a_file_says_why_before_training(tiny_data, tmp_path):
    blocker = tmp_path / "models"
    blocker.write_text("I am a file")
    r = run(["train", "--data", tiny_data, *TINY, "--out", blocker / "m.npz"])
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr                 # no epoch lines: refused before training
    assert str(blocker) in lines[0] and "is a file, not a directory" in lines[0]
    assert blocker.read_text() == "I am a file" and sorted(p.name for p in tmp_path.iterdir()) == ["models"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_out_in_a_read_only_directory_says_why_before_training(tiny_data, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        r = run(["train", "--data", tiny_data, *TINY, "--out", locked / "m.npz"])
    finally:
        locked.chmod(0o755)
    assert r.returncode == 2 and "not writable" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_python_dash_m_runs_without_the_console_script(tmp_path):
    """The read-only test runs ``python -m digitnet``; it must behave like the script."""
    r = subprocess.run([sys.executable, "-m", "digitnet", "evaluate", str(tmp_path / "none.npz")],
                       capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 1 and r.stderr.strip() == f"digitnet: error: {tmp_path / 'none.npz'}: no such file"


# --- Ctrl-C while the program starts ---------------------------------------------------------

SLOW_IMPORT = """
import importlib.abc, sys, time

class SlowTrainImport(importlib.abc.MetaPathFinder):
    # holds the import of digitnet.cli.train for 20 s after saying so: a Ctrl-C sent on the
    # word lands while the command modules load, every time
    def find_spec(self, name, path=None, target=None):
        if name == "digitnet.cli.train":
            sys.stderr.write("importing the commands\\n")
            sys.stderr.flush()
            time.sleep(20)
        return None

sys.meta_path.insert(0, SlowTrainImport())
"""


def test_ctrl_c_while_the_commands_load_is_one_line_not_a_traceback(tmp_path):
    """Ctrl-C while typer, rich and the command modules are imported (the first tenth of a
    second of every run): one line and exit 130, never a traceback. A sitecustomize on
    PYTHONPATH holds that import open, so the signal lands there deterministically."""
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(SLOW_IMPORT)
    env = {**os.environ, "NO_COLOR": "1", "PYTHONPATH": os.pathsep.join(filter(None, [str(shim), os.environ.get("PYTHONPATH")]))}
    p = subprocess.Popen([str(DIGITNET), "evaluate", str(tmp_path / "none.npz")], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
    assert p.stderr.readline() == "importing the commands\n"
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert "Traceback" not in err and err.strip() == "digitnet: error: interrupted", err
    assert p.returncode == 130
