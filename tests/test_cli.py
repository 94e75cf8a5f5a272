"""The CLI's train and evaluate commands, help for every command, and one real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from digitnet.cli import app
from digitnet.modelfile import load_model

DIGITNET = Path(sys.executable).with_name("digitnet")
SHIPPED = Path(__file__).resolve().parents[1] / "models" / "digitnet.npz"
runner = CliRunner()


def accuracy_by_hand(model, images, labels) -> float:
    """A dense ReLU network's accuracy from its weights, with a forward pass written here
    (z = a W^T + b, ReLU between layers; the largest output wins): a second implementation."""
    a = images.reshape(len(images), -1).astype(np.float64) / 255
    dense = [v for v in model.network.views if "W" in v]
    for i, v in enumerate(dense):
        a = a @ v["W"].astype(np.float64).T + v["b"]
        if i < len(dense) - 1:
            a = np.maximum(a, 0)
    return float(np.mean(a.argmax(axis=1) == labels))


def all_commands(group, prefix=()):
    """Every leaf command of a Typer group, as a tuple of names."""
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):
            yield from all_commands(cmd, prefix + (name,))
        else:
            yield prefix + (name,)


def test_every_command_has_help_with_an_example():
    import typer.main

    root = typer.main.get_command(app)
    commands = list(all_commands(root))
    assert {"train", "evaluate"} <= {c[0] for c in commands}
    for path in commands:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, path
        assert "Example" in result.output, f"{' '.join(path)} --help has no example"


def test_train_json_and_evaluate_json(tmp_path, embedded):
    out = tmp_path / "m.npz"
    r = runner.invoke(app, ["train", "--hidden", "16", "--epochs", "2", "--no-augment", "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert {"accuracy", "epochs", "seconds", "samples_per_second", "out"} <= set(summary)
    model = load_model(out)
    expected = accuracy_by_hand(model, embedded.test_images, embedded.test_labels)
    assert summary["epochs"] == 2 and summary["out"] == str(out)
    assert summary["accuracy"] == summary["test_accuracy"] == pytest.approx(expected, abs=1e-9)
    assert model.network.mlp() == ((784, 16, 10), "relu", "softmax") and model.config["augment"] is False
    assert model.config["layers"] == "" and model.config["hidden"] == [16]
    r = runner.invoke(app, ["evaluate", str(out), "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["accuracy"] == pytest.approx(expected, abs=1e-9)
    assert report["n"] == 2000 and len(report["confusion_matrix"]) == 10
    assert {"label", "name", "precision", "recall", "f1", "support"} <= set(report["per_class"][0])


def test_train_refuses_to_overwrite_without_force(tmp_path):
    out = tmp_path / "m.npz"
    out.write_bytes(b"precious")
    r = runner.invoke(app, ["train", "--epochs", "1", "--out", str(out)])
    assert r.exit_code == 2 and "--force" in r.output
    assert out.read_bytes() == b"precious"


def test_evaluate_renders_plain_tables(tiny_model):
    r = runner.invoke(app, ["evaluate", str(tiny_model)])
    assert r.exit_code == 0, r.output
    assert "accuracy" in r.output and "Confusion matrix" in r.output and "\x1b[" not in r.output
    assert "Most confused" in r.output


@pytest.mark.parametrize("args, code, message", [
    (["train", "--epochs", "0"], 2, "--epochs"),
    (["train", "--hidden", "16,x"], 2, "--hidden"),
    (["train", "--activation", "gelu"], 2, "sigmoid, relu, tanh"),
    (["train", "--preset", "big"], 2, "3b1b"),
    (["train", "--layers", "conv8x5,dense16,pool2"], 2, "'pool2'"),
    (["train", "--layers", "conv8x40"], 2, "a 40×40 kernel does not fit 28×28 maps"),
    (["train", "--layers", "dense16:swish"], 2, "'dense16:swish'"),
    (["train", "--optimizer", "rmsprop"], 2, "sgd, adam"),
    (["train", "--data", "/nonexistent"], 1, "no such data set"),
    (["evaluate", "/nonexistent.npz"], 1, "no such file"),
    (["evaluate", "--split", "val"], 2, "--split"),
])
def test_usage_and_data_errors_are_one_line(tmp_path, args, code, message):
    args = args + (["--out", str(tmp_path / "x.npz")] if args[0] == "train" else [])
    r = runner.invoke(app, args)
    assert r.exit_code == code, r.output
    assert message in r.output and "Traceback" not in r.output


def test_console_script_and_python_dash_m(tiny_model):
    r = subprocess.run([str(DIGITNET), "evaluate", str(tiny_model), "--json"], capture_output=True, text=True)
    assert r.returncode == 0 and json.loads(r.stdout)["n"] == 2000
    r = subprocess.run([sys.executable, "-m", "digitnet", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("digitnet ")
    r = subprocess.run([str(DIGITNET), "evaluate", "/no/such.npz"], capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


def _terminal():
    import io

    from rich.console import Console

    buf = io.StringIO()
    return buf, Console(file=buf, force_terminal=True, width=120, highlight=False)


def _stats(epoch, loss, acc, val=None, lr=0.1):
    from digitnet.training import EpochStats

    return EpochStats(epoch, lr, loss, acc, None if val is None else loss, val, 1.0, 1000.0)


def test_progress_view_says_what_the_first_seconds_are_and_keeps_the_clock_moving():
    """Before the first chunk (kernels compiling, the first augmentation) the status says so
    and its elapsed clock runs on its own; then the bar counts the epoch, with the time left
    for the whole run; between epochs the status names the augmentation."""
    import time

    from digitnet.cli.train import ProgressView

    buf, console = _terminal()
    with ProgressView(console, epochs=3, n_classes=10, augment=True) as view:
        task = view.progress.tasks[0]
        assert task.description == "starting: compiling the kernels (first run only), augmenting"
        time.sleep(1.3)                                             # nothing reported: the clock still moves
        assert "0:00:01" in buf.getvalue()
        for epoch in range(3):
            for done in (10, 20, 30):
                time.sleep(0.01)
                view.chunk(epoch, done, 30, 0.5 / (epoch + 1), 0.8)
            assert task.description == f"epoch {epoch + 1:>3}/3" and task.completed == 30
            assert task.fields["eta"].endswith(" left")
            view.epoch(_stats(epoch + 1, 0.5 / (epoch + 1), 0.8, 0.85))
            if epoch < 2:
                assert task.description == f"augmenting epoch {epoch + 2}"
    text = buf.getvalue()
    assert "epoch   3: loss 0.1667" in text and "val acc 85.00%" in text and "hint" not in text


def test_progress_view_counts_a_resumed_run_from_its_own_start():
    from digitnet.cli.train import ProgressView

    _, console = _terminal()
    with ProgressView(console, epochs=2) as view:
        view.chunk(30, 5, 10, 0.1, 0.9)                             # a resumed model's epoch 31
        assert view.progress.tasks[0].description == "epoch   1/2"
        view.epoch(_stats(31, 0.1, 0.9))
        view.chunk(31, 5, 10, 0.1, 0.9)
        assert view.progress.tasks[0].description == "epoch   2/2"


def test_progress_view_in_a_pipe_prints_epoch_lines_only():
    import io

    from rich.console import Console

    from digitnet.cli.train import ProgressView

    buf = io.StringIO()
    with ProgressView(Console(file=buf, force_terminal=False), epochs=1) as view:
        view.chunk(0, 5, 10, 0.3, 0.9)
        view.epoch(_stats(1, 0.3, 0.9))
    assert buf.getvalue() == "epoch   1: loss 0.3000  train acc 90.00%  1.00 s  1,000 samples/s\n"


def test_learning_rate_hints_after_an_epoch():
    """A cost that rises sharply suggests a lower rate; accuracy at chance level (1/classes)
    with a cost near a chance-level guess's says the rate is too low; each hint once, in a pipe too."""
    import io

    from rich.console import Console

    from digitnet.cli.train import ProgressView

    buf = io.StringIO()
    with ProgressView(Console(file=buf, force_terminal=False, width=300), epochs=4, n_classes=4) as view:
        view.epoch(_stats(1, 0.8, 0.6, 0.6, lr=3.0))
        view.epoch(_stats(2, 1.1, 0.5, 0.5, lr=3.0))               # 1.1 < 1.5 × 0.8: not yet
        view.epoch(_stats(3, 1.15, 0.35, 0.36, lr=3.0))            # 0.36 ≤ 1.5/4: chance level
        view.epoch(_stats(4, 2.0, 0.3, 0.3, lr=3.0))               # 2.0 > 1.5 × 0.8: rising
        view.epoch(_stats(5, 3.0, 0.3, 0.3, lr=3.0))
    hints = [line for line in buf.getvalue().splitlines() if line.startswith("hint:")]
    assert hints == ["hint: accuracy 36.0% is chance level (25% for 4 classes) and the cost 1.1500 is not far above "
                     "a chance-level guess's (1.3863): the network has barely moved, the learning rate (lr 3) looks "
                     "too low; try --lr 30",
                     "hint: the cost rose from 0.8000 to 2.0000: the learning rate (lr 3) looks too high; try --lr 0.3"]


def test_help_examples_keep_their_lines():
    """Click re-flows paragraphs unless they follow a \\b line: each example stays on its own line."""
    import typer.main

    for path in all_commands(typer.main.get_command(app)):
        out = runner.invoke(app, [*path, "--help"], terminal_width=200).output
        block = out[out.index("Example"):].split("\n\n")[0].splitlines()[1:]
        assert block and all(line.strip().startswith(("digitnet", "find", "#", "|")) for line in block), (path, block)


def test_train_json_describes_the_saved_epoch(tmp_path, embedded):
    import numpy as np

    data = tmp_path / "no-test.npz"        # no test split: the summary falls back to validation
    np.savez(data, images=embedded.train_images[:600], labels=embedded.train_labels[:600])
    out = tmp_path / "m.npz"
    r = runner.invoke(app, ["train", "--data", str(data), "--hidden", "8", "--epochs", "3", "--no-augment",
                            "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout.strip().splitlines()[-1])
    best = next(h for h in load_model(out).history if h["epoch"] == s["best_epoch"])
    assert s["test_accuracy"] is None and s["accuracy"] == s["val_accuracy"] == best["val_accuracy"]
    r = runner.invoke(app, ["train", "--hidden", "8", "--epochs", "1", "--no-augment", "--val-split", "0",
                            "--out", str(tmp_path / "n.npz"), "--json"])
    s = json.loads(r.stdout.strip().splitlines()[-1])
    assert s["val_accuracy"] is None and s["accuracy"] == s["test_accuracy"] > 0.5


@pytest.fixture(scope="module")
def digits_npz(tmp_path_factory, embedded):
    """500 training and 200 test digits as an .npz data set: a conv net trains on it in a second."""
    import numpy as np

    path = tmp_path_factory.mktemp("cli-data") / "digits.npz"
    np.savez(path, train_images=embedded.train_images[:500], train_labels=embedded.train_labels[:500],
             test_images=embedded.test_images[:200], test_labels=embedded.test_labels[:200])
    return path


def test_train_layers_and_adam_then_resume(tmp_path, digits_npz):
    """--layers and --optimizer reach the saved model; --resume continues it (history grows,
    the data set comes from the model) and refuses another network in one line."""
    out = tmp_path / "conv.npz"
    r = runner.invoke(app, ["train", "--data", str(digits_npz), "--layers", "conv4x5,pool2,dense16,dropout0.25",
                            "--optimizer", "adam", "--lr", "0.003", "--epochs", "2", "--no-augment",
                            "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    model = load_model(out)
    assert [l.config() for l in model.network.layers] == [
        {"type": "conv", "filters": 4, "kernel": 5, "stride": 1, "padding": 0},
        {"type": "activation", "function": "relu"}, {"type": "maxpool", "size": 2, "stride": 2},
        {"type": "flatten"}, {"type": "dense", "units": 16}, {"type": "activation", "function": "relu"},
        {"type": "dropout", "rate": 0.25}, {"type": "dense", "units": 10}, {"type": "activation", "function": "softmax"}]
    assert model.config["optimizer"] == "adam" and model.config["layers"] == "conv4x5,pool2,dense16,dropout0.25"
    assert json.loads(r.stdout.strip().splitlines()[-1])["test_accuracy"] > 0.3       # chance is 0.1
    r = runner.invoke(app, ["train", "--resume", str(out), "--epochs", "1", "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    again = load_model(out)
    assert [h["epoch"] for h in again.history] == [1, 2, 3] and again.dataset["spec"] == str(digits_npz)
    assert again.config["layers"] == "conv4x5:relu,pool2,dense16:relu,dropout0.25"
    before = out.read_bytes()
    r = runner.invoke(app, ["train", "--resume", str(out), "--layers", "conv8x5,pool2,dense16", "--out", str(out)])
    assert r.exit_code == 2 and "Traceback" not in r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "--resume keeps the model's network (conv4x5:relu,pool2,dense16:relu,dropout0.25" \
        in lines[0], r.stderr
    assert out.read_bytes() == before


# ---------------------------------------------------------------------------------------------
# one surface for scripts

MINE = [("predict",), ("evaluate",), ("inspect", "summary"), ("inspect", "weights"), ("inspect", "activations"),
        ("inspect", "noise"), ("inspect", "dream"), ("inspect", "errors"), ("data", "list"), ("data", "show")]


CHOICES = {("predict",): ["--format table|csv|tsv|jsonl"], ("evaluate",): ["--split test|train"],
           ("inspect", "activations"): ["--split test|train"], ("inspect", "errors"): ["--split test|train"],
           ("data", "show"): ["--split train|test"]}


@pytest.mark.parametrize("path", MINE, ids=[" ".join(p) for p in MINE])
def test_help_lists_choices_without_type_noise_and_fits_80_columns(path):
    """Options with choices list them (--format table|csv|tsv|jsonl); no Typer noise such as
    <list[str]>, <str> or {INPUT...}...; at 80 columns no line is longer (so no example breaks
    mid-word); the model option reads the same everywhere it is."""
    import re

    out = runner.invoke(app, [*path, "--help"], terminal_width=80).output
    assert not re.search(r"<(str|list\[str\])>|\{[A-Za-z.]+\}", out), out
    assert max(len(line) for line in out.splitlines()) <= 80, max(out.splitlines(), key=len)
    for choices in CHOICES.get(path, ()):
        assert choices in out, (choices, out)
    if "--model" in out:
        assert "-m, --model MODEL" in out and "./models/digitnet.npz (where train writes)" in " ".join(out.split())


def test_predict_help_usage_line():
    out = runner.invoke(app, ["predict", "--help"], terminal_width=80).output
    assert out.splitlines()[0] == "Usage: digitnet predict [OPTIONS] INPUT..."
    assert "--format table|csv|tsv|jsonl" in out and "-f," not in out     # -f is --force's letter


@pytest.mark.parametrize("alias, cost, output", [("mse", "quadratic", "sigmoid"), ("squared-error", "quadratic", "sigmoid"),
                                                 ("log-loss", "cross-entropy", "softmax")])
def test_cost_aliases_reach_the_saved_model(tmp_path, digits_npz, alias, cost, output):
    out = tmp_path / "m.npz"
    r = runner.invoke(app, ["train", "--data", str(digits_npz), "--hidden", "8", "--epochs", "1", "--no-augment",
                            "--cost", alias, "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    m = load_model(out)
    assert m.network.cost == cost and m.network.output == output and m.config["cost"] == cost
    helptext = " ".join(runner.invoke(app, ["train", "--help"], terminal_width=200).output.split())
    assert "mse" in helptext and "log-loss" in helptext


def test_resume_continues_from_the_saved_weights(tmp_path, digits_npz):
    """--resume starts from the file's weights, not from a fresh network: at a learning rate
    too small to move them, the resumed model's weights are the saved ones (a restart from
    scratch would give the seed's initial weights), and its first epoch's cost is the saved
    model's, not an untrained network's."""
    from digitnet.training import TrainConfig

    out = tmp_path / "m.npz"
    r = runner.invoke(app, ["train", "--data", str(digits_npz), "--hidden", "16", "--epochs", "3", "--no-augment",
                            "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    saved = load_model(out)
    again = tmp_path / "again.npz"
    r = runner.invoke(app, ["train", "--resume", str(out), "--epochs", "1", "--lr", "1e-12", "--out", str(again), "--json"])
    assert r.exit_code == 0, r.output
    resumed = load_model(again)
    fresh = TrainConfig(hidden=(16,), seed=saved.config["seed"]).build((28, 28), 10)
    assert np.allclose(resumed.network.params, saved.network.params, atol=1e-6)
    assert not np.allclose(resumed.network.params, fresh.params, atol=1e-2)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]
    assert resumed.history[3]["loss"] < saved.history[0]["loss"]


def test_one_rule_for_the_default_model(tiny_model, tmp_path):
    """Outside the repository: train writes ./models/digitnet.npz, and predict, evaluate and
    inspect then use it; without it, the shipped model; $DIGITNET_MODEL first of all."""
    import shutil

    import cli_helpers

    here = tmp_path / "work"
    (here / "models").mkdir(parents=True)

    def used(**extra) -> set[str]:
        ev = json.loads(cli_helpers.run(["evaluate", "--json"], cwd=here, **extra).stdout)["model"]
        summary = json.loads(cli_helpers.run(["inspect", "summary", "--json", "--no-test"], cwd=here, **extra).stdout)["path"]
        return {ev, summary}

    def scores(*model) -> list:
        """predict's scores for three digits (predict does not print the model's path)."""
        r = cli_helpers.run(["predict", *model, "--json", "--probs", digits], cwd=here)
        assert r.returncode == 0, r.stderr
        return [json.loads(line)["probs"] for line in r.stdout.decode().splitlines()]

    digits = here / "digits.npy"
    np.save(digits, np.load(SHIPPED.parent.parent / "digitnet" / "resources" / "mnist-embedded.npz")["test_images"][:3])
    assert used() == {str(SHIPPED)}
    assert scores() == scores("-m", SHIPPED)
    shutil.copy(tiny_model, here / "models" / "digitnet.npz")
    assert used() == {"models/digitnet.npz"}
    assert scores() == scores("-m", tiny_model) != scores("-m", SHIPPED)
    assert used(DIGITNET_MODEL=SHIPPED.parent / "mnist-3b1b.npz") == {str(SHIPPED.parent / "mnist-3b1b.npz")}


def test_data_names_are_data_not_markup(tmp_path, embedded):
    """`data show` and `data list` print data-set and class names as they are: rich markup
    kept literally, a control character made visible, nothing crashing."""
    import cli_helpers

    set_path = tmp_path / "[red]mine[i].npz"
    np.savez(set_path, train_images=embedded.train_images[:20], train_labels=np.arange(20) % 2,
             class_names=np.array(["[bold]even", "odd\x1b[2J"]))
    r = cli_helpers.run(["data", "show", set_path, "-n", "2"], PYTHONIOENCODING="utf-8:strict")
    out = r.stdout.decode()
    assert r.returncode == 0, r.stderr
    assert out.startswith("[red]mine[i]: train split") and "#0 0 [bold]even" in out and "\x1b" not in out
    imported = tmp_path / "xdg" / "digitnet" / "imported"
    imported.mkdir(parents=True)
    (imported / "[bold]set\x07.npz").write_bytes(set_path.read_bytes())
    r = cli_helpers.run(["data", "list"], XDG_DATA_HOME=tmp_path / "xdg", COLUMNS=300)
    out = r.stdout.decode()
    assert r.returncode == 0, r.stderr
    assert "[bold]set\\x07 " in out and "\x07" not in out


CLOSED_PIPE = [["evaluate"], ["evaluate", "--json"], ["evaluate", "--data", "LABELLED", "--show"],
               ["data", "list"], ["data", "list", "--json"], ["data", "show", "-n", "2"], ["data", "show", "--json"],
               ["inspect", "summary", "--no-test"], ["inspect", "summary", "--json", "--no-test"],
               ["inspect", "errors", "-n", "2"], ["inspect", "weights"], ["inspect", "activations", "-i", "0", "--json"],
               ["predict", "DIGITS"], ["predict", "DIGITS", "--format", "csv"], ["predict", "DIGITS", "--json"],
               ["train", "--epochs", "1", "--hidden", "8", "--no-augment", "-o", "OUT"],
               ["train", "--epochs", "1", "--hidden", "8", "--no-augment", "-o", "OUT", "--json"]]


@pytest.mark.parametrize("args", CLOSED_PIPE, ids=[" ".join(a) for a in CLOSED_PIPE])
def test_a_reader_that_is_gone_ends_every_command_quietly_with_exit_0(tiny_model, tmp_path, embedded, args):
    """stdout is a pipe whose reader has already closed it (`| head` at its most abrupt): the
    first write fails, deterministically. Every command that prints a result, in every
    format, exits 0 with nothing on stderr (train's epoch lines aside), and train still saves."""
    import os

    import cli_helpers

    digits = tmp_path / "digits.npy"
    np.save(digits, embedded.test_images[:4])
    np.savetxt(tmp_path / "labelled.csv", np.column_stack([embedded.test_labels[:30], embedded.test_images[:30].reshape(30, -1)]),
               fmt="%d", delimiter=",")
    given = {"DIGITS": digits, "LABELLED": tmp_path / "labelled.csv", "OUT": tmp_path / "m.npz"}
    argv = [str(given.get(a, a)) for a in args] + ([] if args[0] in ("data", "train") else ["-m", str(tiny_model)])
    read, write = os.pipe()
    os.close(read)
    try:
        r = subprocess.run([str(DIGITNET), *argv], stdout=write, stderr=subprocess.PIPE, timeout=120,
                           cwd=tmp_path, env=cli_helpers.env())
    finally:
        os.close(write)
    err = [line for line in r.stderr.decode().splitlines() if not line.startswith("epoch ")]
    assert (r.returncode, err) == (0, [])
    if args[0] == "train":
        assert load_model(tmp_path / "m.npz").network.mlp()[0] == (784, 8, 10)
