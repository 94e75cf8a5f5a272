"""The CLI's train and evaluate commands, help for every command, and one real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from digitnet.cli import app
from digitnet.modelfile import load_model

DIGITNET = Path(sys.executable).with_name("digitnet")
runner = CliRunner()


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


def test_train_json_and_evaluate_json(tmp_path):
    out = tmp_path / "m.npz"
    r = runner.invoke(app, ["train", "--hidden", "16", "--epochs", "2", "--no-augment", "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert {"accuracy", "epochs", "seconds", "samples_per_second", "out"} <= set(summary)
    assert summary["epochs"] == 2 and summary["out"] == str(out) and 0.5 < summary["accuracy"] <= 1
    model = load_model(out)
    assert model.network.mlp() == ((784, 16, 10), "relu", "softmax") and model.config["augment"] is False
    assert model.config["layers"] == "" and model.config["hidden"] == [16]
    r = runner.invoke(app, ["evaluate", str(out), "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["accuracy"] == pytest.approx(summary["test_accuracy"])
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


def test_progress_view_on_a_terminal_across_epochs():
    import io

    from rich.console import Console

    from digitnet.cli.train import ProgressView
    from digitnet.training import EpochStats

    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=100, highlight=False)
    with ProgressView(console, epochs=3) as view:
        for epoch in range(3):
            for done in (10, 20, 30):
                view.chunk(epoch, done, 30, 0.5 / (epoch + 1), 0.8)
            view.epoch(EpochStats(epoch + 1, 0.1, 0.5, 0.8, 0.4, 0.85, 1.0, 1000.0))
    text = buf.getvalue()
    assert "epoch   3: loss 0.5000" in text and "val acc 85.00%" in text
    assert view.progress.tasks[0].completed == 30 and view.progress.tasks[0].fields["epoch"] == 3


def test_progress_view_in_a_pipe_prints_epoch_lines_only():
    import io

    from rich.console import Console

    from digitnet.cli.train import ProgressView
    from digitnet.training import EpochStats

    buf = io.StringIO()
    with ProgressView(Console(file=buf, force_terminal=False), epochs=1) as view:
        view.chunk(0, 5, 10, 0.3, 0.9)
        view.epoch(EpochStats(1, 0.1, 0.3, 0.9, None, None, 2.0, 500.0))
    assert buf.getvalue() == "epoch   1: loss 0.3000  train acc 90.00%  2.00 s  500 samples/s\n"


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
