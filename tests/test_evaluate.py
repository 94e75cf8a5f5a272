"""digitnet evaluate: on a data set, on a labelled folder (a folder per class) and on a CSV
with a label column, through the real console script; the report laid out as scikit-learn's
classification_report; --show; failures listed and counted. Expected numbers come from a
second path: predict's rows, or the model's forward pass counted here by hand."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import cli_helpers
from digitnet.modelfile import Model, load_model, save_model
from digitnet.predict import predict_inputs

N_PER_CLASS = 4


def evaluate(*args, **kw):
    return cli_helpers.run(["evaluate", *args], **kw)


@pytest.fixture(scope="module")
def folder(tmp_path_factory, embedded):
    """A folder per class (0/ … 9/), 4 digits each drawn as a person would (dark on light,
    larger), plus a broken file in 3/ and, in 7/, two images of a 1 (certainly wrong)."""
    d = tmp_path_factory.mktemp("labelled") / "mine"
    x, y = embedded.test_images, embedded.test_labels
    for c in range(10):
        (d / str(c)).mkdir(parents=True)
        for k, i in enumerate(np.flatnonzero(y == c)[:N_PER_CLASS]):
            Image.fromarray(255 - x[i]).resize((84, 84)).save(d / str(c) / f"{c}-{k}.png")
    (d / "3" / "broken.png").write_bytes(b"not a png")
    for k, i in enumerate(np.flatnonzero(y == 1)[10:12]):
        Image.fromarray(255 - x[i]).resize((84, 84)).save(d / "7" / f"one-{k}.png")
    return d


def truth_of(folder: Path) -> tuple[list[str], list[int]]:
    """The readable images of the folder and their labels, by folder name."""
    paths = sorted(str(p) for p in folder.glob("*/*.png") if p.name != "broken.png")
    return paths, [int(Path(p).parent.name) for p in paths]


def by_hand(labels, predicted, n=10) -> np.ndarray:
    cm = np.zeros((n, n), int)
    for t, p in zip(labels, predicted):
        cm[t, p] += 1
    return cm


def test_a_labelled_folder(tiny_model, folder):
    """The report on a folder per class equals the one counted here from predict's own rows;
    the broken file is listed (one line, exit 1) and left out of the counts."""
    paths, labels = truth_of(folder)
    rows = {r.input: r for r in predict_inputs(load_model(tiny_model), paths)}
    predicted = [rows[p].label for p in paths]
    r = evaluate("-m", tiny_model, "--data", folder, "--json")
    assert r.returncode == 1, r.stderr
    report = json.loads(r.stdout)
    assert report["kind"] == "folder" and report["n"] == len(paths) == 42
    assert report["confusion_matrix"] == by_hand(labels, predicted).tolist()
    assert report["accuracy"] == pytest.approx(np.mean(np.array(labels) == np.array(predicted)))
    assert [(f["input"], f["index"]) for f in report["failed"]] == [(str(folder / "3" / "broken.png"), None)]
    err = r.stderr.decode().splitlines()
    assert err == [f"digitnet: error: {folder / '3' / 'broken.png'}: not an image Pillow can read"]


def test_show_draws_the_most_confident_mistakes(tiny_model, folder):
    """--show: the wrong ones, most confident first, as predict scores them; in plain text."""
    paths, labels = truth_of(folder)
    rows = [r for r in predict_inputs(load_model(tiny_model), paths)]
    wrong = sorted(((r.confidence, p) for r, p, y in zip(rows, paths, labels) if r.label != y), reverse=True)
    assert len(wrong) >= 2                                     # at least the two 1s filed under 7/
    r = evaluate("-m", tiny_model, "--data", folder, "--show", "-n", "2")
    out = r.stdout.decode()
    assert f"The 2 most confident of {len(wrong)} mistakes" in out
    listed = [re.match(r"\s+\d+\. (.*): \d read as \d", line).group(1) for line in out.splitlines()
              if re.match(r"\s+\d+\. ", line)]
    assert listed == [p for _, p in wrong[:2]]
    js = json.loads(evaluate("-m", tiny_model, "--data", folder, "--show", "-n", "2", "--json").stdout)
    assert [m["input"] for m in js["mistakes"]] == listed
    assert [m["confidence"] for m in js["mistakes"]] == pytest.approx([c for c, _ in wrong[:2]], abs=1e-6)


def test_class_folders_by_name(tiny_model, folder, tmp_path):
    """Folders named by class name (any letter case) are that class of the model; a folder
    that is no class of the model is refused in one line."""
    words = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
    m = load_model(tiny_model)
    named = save_model(Model(m.network, words, m.input_shape, dataset=m.dataset), tmp_path / "named.npz")
    d = tmp_path / "words"
    for c in (2, 5, 7):
        shutil.copytree(folder / str(c), d / words[c].capitalize())
    r = evaluate("-m", named, "--data", d, "--json")
    report = json.loads(r.stdout)
    assert r.returncode == 0, r.stderr
    assert [row["support"] for row in report["per_class"]] == [0, 0, 4, 0, 0, 4, 0, 6, 0, 0]
    (d / "eleven").mkdir()
    shutil.copy(folder / "2" / "2-0.png", d / "eleven")
    bad = evaluate("-m", named, "--data", d)
    assert bad.returncode == 1 and bad.stderr.decode().count("\n") == 1
    assert "class folder eleven/ is not one of the model's classes" in bad.stderr.decode()


@pytest.fixture(scope="module")
def labelled_csv(tmp_path_factory, embedded):
    """60 test digits as CSV rows (label, then 784 pixels 0-255) with a header, and three bad
    rows: a label no class has, a NaN pixel, a short row."""
    path = tmp_path_factory.mktemp("csv") / "labelled.csv"
    x, y = embedded.test_images[:60].reshape(60, -1), embedded.test_labels[:60]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["label"] + [f"p{i}" for i in range(784)])
        for i in range(60):
            w.writerow([int(y[i])] + x[i].tolist())
            if i == 10:
                w.writerow([12] + x[i].tolist())
            if i == 20:
                w.writerow([3] + ["nan"] + x[i, 1:].tolist())
            if i == 30:
                w.writerow([3, 0, 0])
    return path, x, y


def test_a_csv_with_a_label_column(tiny_model, labelled_csv):
    """Accuracy and mean cost on the good rows equal the model's forward pass counted here;
    the bad rows are named by index, one line each, exit 1."""
    path, x, y = labelled_csv
    m = load_model(tiny_model)
    a = m.predict_proba(x.astype(np.float32) / 255)                         # (60, 10) softmax outputs
    r = evaluate("-m", tiny_model, "--data", path, "--json")
    assert r.returncode == 1
    report = json.loads(r.stdout)
    assert report["kind"] == "csv" and report["n"] == 60
    assert report["accuracy"] == pytest.approx(np.mean(a.argmax(1) == y))
    assert report["loss"] == pytest.approx(np.mean(-np.log(a[np.arange(60), y])), rel=1e-5)
    assert report["confusion_matrix"] == by_hand(y, a.argmax(1)).tolist()
    assert [f["index"] for f in report["failed"]] == [11, 22, 33]
    lines = r.stderr.decode().splitlines()
    assert len(lines) == 3 and "labelled.csv[11]: its label is not a class of the model" in lines[0]
    assert "[22]: holds NaN" in lines[1] and "[33]: row 33 is not 785 numbers" in lines[2]


def test_a_csv_without_labels_is_one_line(tiny_model, tmp_path, embedded):
    np.savetxt(tmp_path / "pixels.csv", embedded.test_images[:3].reshape(3, -1), fmt="%d", delimiter=",")
    r = evaluate("-m", tiny_model, "--data", tmp_path / "pixels.csv")
    assert r.returncode == 1 and r.stderr.decode().count("\n") == 1 and "no label column" in r.stderr.decode()


def test_the_report_reads_as_a_classification_report(tiny_model, embedded):
    """Plain text: per class, then accuracy, macro avg and weighted avg computed here from
    the model's own predictions; the accuracy again as the last line."""
    m = load_model(tiny_model)
    x, y = embedded.test_images, embedded.test_labels
    pred = m.predict_proba(x.reshape(len(x), -1).astype(np.float32) / 255).argmax(1)
    cm = by_hand(y, pred)
    tp, support, predicted = np.diag(cm), cm.sum(1), cm.sum(0)
    precision, recall = tp / predicted, tp / support
    f1 = 2 * precision * recall / (precision + recall)
    r = evaluate("-m", tiny_model)
    assert r.returncode == 0, r.stderr
    lines = [line.replace("│", " ").split() for line in r.stdout.decode().splitlines()]
    macro = next(line for line in lines if line[:2] == ["macro", "avg"])
    weighted = next(line for line in lines if line[:2] == ["weighted", "avg"])
    assert [float(v) for v in macro[2:5]] == pytest.approx([precision.mean(), recall.mean(), f1.mean()], abs=6e-4)
    w = support / support.sum()
    assert [float(v) for v in weighted[2:5]] == pytest.approx([w @ precision, w @ recall, w @ f1], abs=6e-4)
    accuracy = np.mean(pred == y)
    assert next(line for line in lines if line[:1] == ["accuracy"])[1] == f"{accuracy:.3f}"
    assert lines[-1] == ["accuracy", f"{accuracy:.2%}", f"({int((pred == y).sum()):,}", "of", "2,000", "right)"]


@pytest.mark.parametrize("columns", [36, 50, 120])
def test_narrow_terminals_drop_columns_not_digits(tiny_model, columns):
    m = load_model(tiny_model)
    code, out = cli_helpers.run_in_terminal(["evaluate", "-m", tiny_model, "--data", "embedded"], columns)
    assert code == 0, out
    report = json.loads(evaluate("-m", tiny_model, "--json").stdout)
    assert all(len(line) <= columns for line in out.splitlines()), out
    assert "…" not in out.split("Most confused")[0]
    for row in report["per_class"]:                           # every class's precision, whole
        assert f"{row['precision']:.3f}" in out
    assert ("Confusion matrix" in out) == (columns >= 80) and m.class_names


def test_evaluate_default_data_and_the_old_positional_model(tiny_model):
    new = json.loads(evaluate("-m", tiny_model, "--json").stdout)
    old = json.loads(evaluate(tiny_model, "--json").stdout)
    assert new == old and new["n"] == 2000 and new["kind"] == "dataset" and new["split"] == "test"
    assert {"macro_avg", "weighted_avg"} <= set(new)
    both = evaluate(tiny_model, "-m", "other.npz")
    assert both.returncode == 2 and "two models named" in both.stderr.decode()


def test_names_are_data_in_the_report(tiny_model, folder, tmp_path):
    """A folder and class names holding rich markup or a control character are printed as
    they are (markup kept, the control character visible), in the report and the mistakes."""
    names = tuple(f"[i]{c}" for c in range(9)) + ("nine\x1b[2J",)
    m = load_model(tiny_model)
    named = save_model(Model(m.network, names, m.input_shape, dataset=m.dataset), tmp_path / "[b]named.npz")
    d = tmp_path / "[red]mine"
    shutil.copytree(folder, d)
    r = evaluate("-m", named, "--data", d, "--show", "-n", "2", PYTHONIOENCODING="utf-8:strict")
    out = r.stdout.decode()
    flat = " ".join(out.split())
    assert r.returncode == 1 and "Traceback" not in r.stderr.decode()
    assert flat.startswith(f"[b]named.npz on {d} (43 image files in 10 class folders): accuracy")
    assert "[i]7 read as [i]1" in flat
    assert "9 nine\\x1b[2J" in out and "\x1b" not in out


def test_in_a_pipe_prose_lines_are_whole_and_unpadded(tiny_model, folder):
    """Piped at COLUMNS=80, the headline, the most-confused line and each listed mistake stay
    one line each (a script's grep finds them), and no line is padded with spaces."""
    paths, labels = truth_of(folder)
    rows = predict_inputs(load_model(tiny_model), paths)
    wrong = [(p, (y, r.label)) for r, p, y in zip(rows, paths, labels) if r.label != y]
    r = evaluate("-m", tiny_model, "--data", folder, "--show", "-n", "50", COLUMNS=80)
    lines = r.stdout.decode().splitlines()
    head = lines[0]
    assert len(head) > 80 and "accuracy" in head and head.endswith(re.search(r"mean cost \d\.\d{4}", head).group(0))
    confused = [line for line in lines if line.startswith("Most confused: ")]
    assert len(confused) == 1 and confused[0].count(" read as ") == min(5, len({pair for _, pair in wrong}))
    assert f"All {len(wrong)} mistakes, most confident first" in r.stdout.decode()
    listed = [line for line in lines if re.match(r"\s+\d+\. ", line)]
    assert len(listed) == len(wrong) and all(re.search(r"read as \d \(\d+\.\d%\)$", line) for line in listed)
    assert not [line for line in lines if line.endswith(" ")]
