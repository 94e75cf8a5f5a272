"""``digitnet train`` through the CLI: its help at 80 columns, bit-identical runs at a pinned
--threads, and Ctrl-C (or a KeyboardInterrupt) in the first epoch."""

from __future__ import annotations

import os
import re
import signal

import numpy as np
import pytest
from typer.testing import CliRunner

import cli_helpers
from digitnet.cli import app
from digitnet.modelfile import load_model
from digitnet.nn.functions import COST_ALIASES, COSTS
from digitnet.training import resolve_config

runner = CliRunner()


@pytest.fixture(scope="module")
def digits_npz(tmp_path_factory, embedded):
    """600 training and 100 test digits as an .npz data set: an epoch of a small conv net in a second."""
    path = tmp_path_factory.mktemp("train-cli") / "digits.npz"
    np.savez(path, train_images=embedded.train_images[:600], train_labels=embedded.train_labels[:600],
             test_images=embedded.test_images[:100], test_labels=embedded.test_labels[:100])
    return path


def _words(text: str) -> set[str]:
    """The names in a help text (a name broken across lines at its hyphen is not one)."""
    return set(re.findall(r"[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9]", text))


# ---------------------------------------------------------------------------------------------
# help

def test_help_fits_80_columns_without_type_noise_and_names_every_cost():
    """The real console script at COLUMNS=80: no line longer (the examples included), no
    Typer type placeholders (<str>, <int>, <float>, <path>, <int range>), and every cost
    name and alias in the registry, whole."""
    r = cli_helpers.run(["train", "--help"], COLUMNS=80)
    out = r.stdout.decode()
    assert r.returncode == 0, r.stderr
    assert max(len(line) for line in out.splitlines()) <= 80, max(out.splitlines(), key=len)
    assert not re.search(r"<[a-z][a-z \[\]]*>", out), re.findall(r"<[a-z][a-z \[\]]*>", out)
    names = set(COSTS) | set(COST_ALIASES)
    assert {"quadratic", "cross-entropy", "mse", "squared-error", "log-loss"} <= names
    assert names <= _words(out), names - _words(out)
    assert "--cost quadratic|cross-entropy" in out


def test_help_lists_the_names_the_registries_hold(monkeypatch):
    """The lists come from the registries, so they cannot drift: a cost alias or a schedule
    added there appears in the help."""
    import digitnet.training as training

    monkeypatch.setitem(COST_ALIASES, "l2-loss", "quadratic")
    monkeypatch.setitem(training.SCHEDULES, "linear-decay", lambda epoch, epochs: 1 - epoch / epochs)
    out = runner.invoke(app, ["train", "--help"], terminal_width=80).output
    flat = " ".join(out.split())
    assert "l2-loss" in _words(out) and "--schedule constant|step|cosine|warmup-cosine|linear-decay" in flat


# ---------------------------------------------------------------------------------------------
# --threads N: the same bits every time

def _arrays(path) -> dict[str, np.ndarray]:
    """A model file's arrays, its metadata (timings) left out."""
    with np.load(path) as z:
        return {k: z[k] for k in z.files if k != "meta"}


@pytest.mark.parametrize("network", [["--hidden", "32,16"], ["--layers", "conv4x5,pool2,dense16,dropout0.25"]],
                         ids=["dense", "conv"])
def test_the_same_seed_and_thread_count_give_the_same_bits(tmp_path, digits_npz, network):
    """Two runs with one seed and --threads 2 (every parallel kernel takes its threaded path)
    save bit-identical arrays, augmentation and dropout included; another seed does not."""
    def run(name, seed):
        out = tmp_path / name
        r = runner.invoke(app, ["train", "--data", str(digits_npz), *network, "--epochs", "1", "--augment",
                                "--seed", str(seed), "--threads", "2", "--out", str(out), "--json"])
        assert r.exit_code == 0, r.output
        return _arrays(out)

    a, b, other = run("a.npz", 3), run("b.npz", 3), run("c.npz", 4)
    assert a.keys() == b.keys() and len(a) >= 4
    for k in a:
        assert a[k].tobytes() == b[k].tobytes(), k
    assert any(a[k].tobytes() != other[k].tobytes() for k in a)


# ---------------------------------------------------------------------------------------------
# an interrupt in the first epoch

@pytest.fixture
def interrupt_in_first_chunk(monkeypatch):
    """Make the first progress report of the run (after the first chunk of mini-batches of
    epoch 1; the epoch has more) deliver ``how``: a SIGINT to this process, or a KeyboardInterrupt."""
    from digitnet.cli.train import ProgressView

    real, seen = ProgressView.chunk, []

    def arm(how):
        def chunk(self, epoch, done, total, loss, acc):
            seen.append((epoch, done, total))
            if len(seen) == 1:
                assert done < total, "the epoch must have more than one chunk for the test to mean something"
                if how == "SIGINT":
                    os.kill(os.getpid(), signal.SIGINT)
                else:
                    raise KeyboardInterrupt
            return real(self, epoch, done, total, loss, acc)

        monkeypatch.setattr(ProgressView, "chunk", chunk)
        return seen

    return arm


# 3b1b: batch 10, so an epoch of the embedded digits' 7,200 training rows is 720 batches, two chunks
FIRST_EPOCH = ["train", "--preset", "3b1b", "--epochs", "3"]


def test_ctrl_c_in_the_first_epoch_stops_there_with_one_line(tmp_path, interrupt_in_first_chunk):
    """Ctrl-C in the middle of epoch 1: the run stops after that chunk (no epoch finishes);
    exit 130 and one line on stderr; --out is a whole model file (the partly trained
    network, recorded as interrupted, no epochs in its history) and nothing else is left
    in the folder."""
    seen = interrupt_in_first_chunk("SIGINT")
    out = tmp_path / "m.npz"
    r = runner.invoke(app, [*FIRST_EPOCH, "--out", str(out)])
    assert r.exit_code == 130, r.output
    assert r.stderr.splitlines() == [f"Interrupted: saved the best model so far to {out}"], r.stderr
    assert [e for e, _, _ in seen] == [0]                  # no chunk after the signal, no second epoch
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]
    model = load_model(out)
    assert model.history == [] and model.meta["stopped"] == "interrupted"
    untrained = resolve_config("3b1b").build((28, 28), 10)        # the run's initial weights (seeded)
    assert model.network.params.shape == untrained.params.shape
    assert not np.array_equal(model.network.params, untrained.params)


def test_a_keyboard_interrupt_in_the_first_epoch_writes_nothing(tmp_path, interrupt_in_first_chunk):
    """A KeyboardInterrupt (Ctrl-C pressed twice) in epoch 1: exit 130 with one line, and no
    file at all, not even a partial one beside --out."""
    interrupt_in_first_chunk("KeyboardInterrupt")
    out = tmp_path / "m.npz"
    r = runner.invoke(app, [*FIRST_EPOCH, "--out", str(out)])
    assert r.exit_code == 130, r.output
    assert r.stderr.splitlines() == ["digitnet: error: interrupted"], r.stderr
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# threads: what the run used is reported

@pytest.mark.parametrize("setting", ["1", "auto"])
def test_json_reports_the_thread_setting_and_the_time_at_each_count(digits_npz, tmp_path, setting):
    """--json says the setting and the seconds spent at each thread count; a pinned run spends
    them all at its count, an auto run only at 1 or all cores; the model file records them too."""
    import json

    from digitnet.threads import cores

    out = tmp_path / "m.npz"
    r = runner.invoke(app, ["train", "--data", str(digits_npz), "--hidden", "16", "--epochs", "2",
                            "--threads", setting, "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    threads = json.loads(r.stdout)["threads"]
    assert threads["setting"] == (1 if setting == "1" else "auto")
    assert threads["seconds"] and all(t > 0 for t in threads["seconds"].values())
    assert set(threads["seconds"]) <= ({"1"} if setting == "1" else {"1", str(cores())})
    assert load_model(out).meta["threads"] == threads["seconds"]


def test_a_bad_thread_count_is_one_line_before_anything_loads(tmp_path):
    r = cli_helpers.run(["train", "--threads", "0", "--out", str(tmp_path / "m.npz")])
    assert r.returncode == 2
    assert r.stderr.decode().strip().splitlines() == ["digitnet: error: --threads must be auto or a whole number ≥ 1, not '0'"]
    assert not (tmp_path / "m.npz").exists()
