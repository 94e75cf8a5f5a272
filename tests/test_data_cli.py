"""``digitnet data``: list, show, download, import through the CLI."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from digitnet.cli import app

runner = CliRunner()
CAPTION = re.compile(r"#(\d+) (\d+)")


@pytest.fixture(autouse=True)
def _data_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))


def _run(*args):
    return runner.invoke(app, ["data", *args])


def _digits_folder(root, embedded, n=4):
    images, labels = embedded.split("train")
    for d in range(10):
        (root / str(d)).mkdir(parents=True)
        for k, i in enumerate(np.flatnonzero(labels == d)[:n]):
            Image.fromarray(255 - images[i]).resize((56, 56)).save(root / str(d) / f"{k}.png")
    return root


@pytest.mark.parametrize("command", ["list", "show", "download", "import"])
def test_every_command_has_help_ending_with_an_example(command):
    result = _run(command, "--help")
    assert result.exit_code == 0
    tail = result.output.strip().split("Arguments:")[0].split("Options:")[0].strip().splitlines()
    assert tail[-2].strip() == "Example:" and tail[-1].strip().startswith("digitnet data " + command)


def test_list_json_names_every_known_set_and_where(tmp_path):
    result = _run("list", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    known = {s["name"]: s for s in doc["known"]}
    assert set(known) >= {"embedded", "mnist", "fashion-mnist", "kmnist"}
    assert known["embedded"]["present"] and known["embedded"]["train"] == 8000
    assert not known["mnist"]["present"]                 # XDG_DATA_HOME is empty in tests
    assert doc["imported"] == [] and doc["data_dir"] == str(tmp_path / "xdg" / "digitnet")


def test_list_json_finds_fashion_mnist_where_debian_installs_it(fashion_mnist):
    result = _run("list", "--json")
    assert result.exit_code == 0, result.output
    fashion = next(s for s in json.loads(result.output)["known"] if s["name"] == "fashion-mnist")
    assert fashion["present"] and fashion["path"] == str(fashion_mnist) and fashion["test"] == 10000


def test_list_table_shows_hint_for_missing_sets():
    result = _run("list")
    assert result.exit_code == 0
    assert "mnist" in result.output and "download" in result.output and "kmnist" in result.output


def test_show_renders_captions_within_80_columns():
    result = _run("show", "embedded", "--count", "3", "--index", "10")
    assert result.exit_code == 0, result.output
    assert all(f"#{i} " in result.output for i in (10, 11, 12)) and "#13 " not in result.output
    assert max(len(line) for line in result.output.splitlines()[1:]) <= 80
    assert any(set(line.strip()) & set("@%#") for line in result.output.splitlines())   # ink is drawn


def test_show_by_label_shows_only_that_class(embedded):
    result = _run("show", "--label", "7", "--count", "4", "--split", "test")
    assert result.exit_code == 0, result.output
    captions = CAPTION.findall(result.output)      # the ramp has '#' but no digits
    assert len(captions) == 4 and all(label == "7" for _, label in captions)
    want = np.flatnonzero(embedded.test_labels == 7)[:4]
    assert [int(i) for i, _ in captions] == list(want)


def test_show_by_class_name_on_fashion(fashion_mnist):
    result = _run("show", "fashion-mnist", "--label", "ankle boot", "-n", "2")
    assert result.exit_code == 0, result.output
    assert result.output.count("Ankle boot") == 2


@pytest.mark.parametrize("args, message", [
    (["--index", "99999"], "out of range"),
    (["--index", "1", "--label", "2"], "not both"),
    (["--label", "banana"], "not a class"),
    (["--split", "val"], "train or test"),
    (["--count", "0"], "at least 1"),
])
def test_show_usage_errors_are_one_line_exit_2(args, message):
    result = _run("show", "embedded", *args)
    assert result.exit_code == 2
    assert message in result.output and len(result.output.strip().splitlines()) == 1


def test_download_usage_and_unknown_names():
    assert _run("download").exit_code == 2
    result = _run("download", "embedded")
    assert result.exit_code == 1 and "ships inside digitnet" in result.output


def test_import_train_evaluate_round_trip(tmp_path, embedded):
    src = _digits_folder(tmp_path / "mine", embedded)
    out = tmp_path / "mine.npz"
    result = _run("import", str(src), "--out", str(out), "--test-split", "0.25", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["train"] == 30 and doc["test"] == 10 and doc["test_per_class"] == [1] * 10
    again = _run("import", str(src), "--out", str(out))
    assert again.exit_code == 2 and "--force" in again.output
    model = tmp_path / "m.npz"
    trained = runner.invoke(app, ["train", "--data", str(out), "--hidden", "16", "--epochs", "3", "--no-augment",
                                  "--out", str(model), "--json"])
    assert trained.exit_code == 0, trained.output
    evaluated = runner.invoke(app, ["evaluate", str(model), "--data", str(out), "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads(evaluated.output.strip().splitlines()[-1])
    assert report["n"] == 10 and 0.0 <= report["accuracy"] <= 1.0
    listed = json.loads(_run("list", "--json").output)["imported"]
    assert [e["name"] for e in listed] == ["mine"] and listed[0]["present"]
    shown = _run("show", str(out), "--split", "test", "--count", "10")
    assert shown.exit_code == 0 and len(CAPTION.findall(shown.output)) == 10


def test_import_bad_folder_is_one_line_exit_1(tmp_path):
    result = _run("import", str(tmp_path / "missing"), "--out", str(tmp_path / "x.npz"))
    assert result.exit_code == 1
    assert "no such folder" in result.output and "Traceback" not in result.output


def test_real_console_script_lists_and_imports(tmp_path, embedded):
    exe = Path(sys.executable).parent / "digitnet"
    env = {"XDG_DATA_HOME": str(tmp_path / "xdg"), "PATH": "/usr/bin:/bin", "NO_COLOR": "1"}
    src = _digits_folder(tmp_path / "d", embedded, n=1)
    proc = subprocess.run([str(exe), "data", "import", str(src)], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "Next: digitnet train --data" in proc.stdout
    proc = subprocess.run([str(exe), "data", "list", "--json"], capture_output=True, text=True, timeout=60, env=env)
    doc = json.loads(proc.stdout)
    assert [e["name"] for e in doc["imported"]] == ["d"]
    assert Path(doc["imported"][0]["path"]) == tmp_path / "xdg" / "digitnet" / "imported" / "d.npz"
