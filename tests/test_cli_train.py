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


# ---------------------------------------------------------------------------------------------
# progress that fits the terminal (issue 15): the clock and the numbers are never cut

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
CLOCK = re.compile(r"(?<![\d:])\d+:\d\d:\d\d(?![\d:])")


def _frames(raw: str) -> list[str]:
    """The status lines a live display drew, from what it wrote to a terminal."""
    return [f.rstrip() for f in re.split(r"[\r\n]", ANSI.sub("", raw)) if f.strip()]


def _stats(epoch, loss, acc, val=None, lr=0.1):
    from digitnet.training import EpochStats

    return EpochStats(epoch, lr, loss, acc, None if val is None else loss, val, 1.0, 1000.0)


@pytest.mark.parametrize("width", [80, 60])
def test_the_status_line_fits_the_terminal_and_keeps_the_clock_whole(width):
    """At start-up (kernels compiling: the clock must visibly run), then within an epoch
    (batches, loss, the time left), then between epochs: each line the live display draws
    is at most ``width`` wide, has the whole elapsed clock and no "…"."""
    import io
    import time

    from rich.console import Console

    from digitnet.cli.train import ProgressView

    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=width, color_system=None, highlight=False)
    with ProgressView(console, epochs=3, n_classes=10, augment=True) as view:
        time.sleep(1.2)
        view.progress.refresh()
        start = _frames(buf.getvalue())
        assert any("0:00:01" in f for f in start), start                     # the clock runs before any chunk
        assert any(f.startswith("starting: compiling the kernels (first run only), augmenting" if width == 80
                                else "compiling the kernels, augmenting") for f in start), start
        mark = len(buf.getvalue())
        for done in (100, 200):
            time.sleep(0.05)
            view.chunk(0, done, 7200, 0.4321, 0.8765)
        view.progress.refresh()
        during = _frames(buf.getvalue()[mark:])
        assert during and all("200/7200" in f and "loss 0.4321" in f and " left" in f for f in during[-1:]), during
        if width == 80:
            assert "acc 87.65%" in during[-1] and "epoch   1/3" in during[-1]
        mark = len(buf.getvalue())
        view.epoch(_stats(1, 0.4321, 0.8765, 0.9))
        view.progress.refresh()
        after = [f for f in _frames(buf.getvalue()[mark:]) if not f.startswith("epoch   1:")]
        assert after and "epoch 2" in after[-1], after
    frames = _frames(buf.getvalue())
    status = [f for f in frames if not f.startswith(("epoch   1:", "hint:"))]
    assert all(len(f) <= width for f in status), [f for f in status if len(f) > width]
    assert all(CLOCK.search(f) for f in status), status
    assert "…" not in buf.getvalue()


def test_train_in_an_80_column_terminal_cuts_no_number(tmp_path, digits_npz):
    """The real console script on a pseudo-terminal 80 columns wide: the live status and the
    history table (fitted: a column goes rather than "0.03…" or "samples…") cut nothing;
    the learning rates of a cosine schedule print whole."""
    code, out = cli_helpers.run_in_terminal(["train", "--data", digits_npz, "--hidden", "8", "--epochs", "2",
                                             "--lr", "0.0345", "--schedule", "cosine", "--threads", "1",
                                             "--out", tmp_path / "m.npz"], 80)
    assert code == 0, out
    assert "…" not in out, out
    text = ANSI.sub("", out)
    history = text[text.index("Training"):text.index("Per class") if "Per class" in text else None]
    rows = [line for line in history.splitlines() if re.match(r"^[│|┃]?\s*[12] ", line)]
    assert len(rows) == 2, history
    lrs = [h["lr"] for h in load_model(tmp_path / "m.npz").history]
    for row, lr in zip(rows, lrs):
        assert f" {lr:.3g} " in row, (row, lr)
    assert max(len(line) for line in history.splitlines()) <= 80, history


# ---------------------------------------------------------------------------------------------
# the learning-rate hint at chance level says one direction, from the cost

def test_a_chance_level_guess_costs_ln_n_or_half_of_one_minus_one_over_n():
    """By hand: outputs 1/n everywhere cost −ln(1/n) = ln n under cross-entropy and
    ½((1 − 1/n)² + (n − 1)/n²) = ½(1 − 1/n) under the quadratic cost."""
    import math

    from digitnet.cli.train import chance_cost

    assert chance_cost("cross-entropy", 10) == pytest.approx(math.log(10), rel=1e-12)
    assert chance_cost("cross-entropy", 4) == pytest.approx(math.log(4), rel=1e-12)
    assert chance_cost("quadratic", 10) == pytest.approx(0.45, rel=1e-12)
    assert chance_cost("quadratic", 4) == pytest.approx(0.375, rel=1e-12)


def _hints(cost, n_classes, *epochs) -> list[str]:
    import io

    from rich.console import Console

    from digitnet.cli.train import ProgressView

    buf = io.StringIO()
    with ProgressView(Console(file=buf, force_terminal=False, width=300), epochs=len(epochs), n_classes=n_classes,
                      cost=cost) as view:
        for s in epochs:
            view.epoch(s)
    return [line for line in buf.getvalue().splitlines() if line.startswith("hint:")]


@pytest.mark.parametrize("cost, n, stuck, saturated", [
    ("cross-entropy", 10, 2.2950, 9.2103),       # ln 10 = 2.3026; a confident wrong softmax: −ln 1e-4
    ("quadratic", 10, 0.4490, 0.9500),           # ½(1 − 1/10) = 0.45; every output near 0 but one wrong near 1
    ("cross-entropy", 4, 1.3000, 2.5000),        # ln 4 = 1.3863
])
def test_the_chance_level_hint_says_one_direction_from_the_cost(cost, n, stuck, saturated):
    """Accuracy at chance level with the cost at a chance-level guess's: the rate is too low
    (try ×10); with the cost far above it: too high (try ÷10). Never both."""
    low = _hints(cost, n, _stats(1, stuck, 1 / n, 1 / n, lr=0.03))
    assert len(low) == 1 and "too low; try --lr 0.3" in low[0] and low[0].count("--lr") == 1, low
    high = _hints(cost, n, _stats(1, saturated, 1 / n, 1 / n, lr=0.03))
    assert len(high) == 1 and "too high; try --lr 0.003" in high[0] and high[0].count("--lr") == 1, high


def test_train_tells_the_progress_which_cost_it_uses(monkeypatch, tmp_path, digits_npz):
    from digitnet.cli import train

    seen = []
    real = train.ProgressView.__init__

    def init(self, *args, **kwargs):
        real(self, *args, **kwargs)
        seen.append(self.cost)

    monkeypatch.setattr(train.ProgressView, "__init__", init)
    r = runner.invoke(app, ["train", "--data", str(digits_npz), "--hidden", "4", "--epochs", "1", "--cost", "mse",
                            "--threads", "1", "--out", str(tmp_path / "m.npz"), "--json"])
    assert r.exit_code == 0, r.output
    assert seen == ["quadratic"]


def test_out_defaults_to_the_one_rule_in_modelpath():
    """--out's default is modelpath.TRAIN_OUT itself (the rule the other commands read), not
    a copy of its value."""
    import inspect

    from digitnet import modelpath
    from digitnet.cli.train import train_command

    assert inspect.signature(train_command).parameters["out"].default.default is modelpath.TRAIN_OUT
