"""digitnet predict: rows in input order, every output format parses, error rows and exit codes,
no numba on the predict path, and preprocessing that helps on person-made images."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from digit_images import write_set
from digitnet.cli import app
from digitnet.modelfile import Model, load_model
from digitnet.nn.network import Network, dense_layers
from digitnet.nn.spec import architecture, parse_layers
from digitnet.predict import predict_inputs

DIGITNET = Path(sys.executable).with_name("digitnet")


@pytest.fixture(scope="module")
def files(tmp_path_factory, embedded):
    """Three images (dark on light), a .npy of 4 digits and their true labels."""
    d = tmp_path_factory.mktemp("inputs")
    x, y = embedded.test_images[:7], embedded.test_labels[:7]
    paths = []
    for i in range(3):
        Image.fromarray(255 - x[i]).resize((112, 112)).save(d / f"d{i}.png")
        paths.append(str(d / f"d{i}.png"))
    np.save(d / "four.npy", x[3:7])
    (d / "bad.png").write_bytes(b"not an image")
    return dict(dir=d, images=paths, npy=str(d / "four.npy"), bad=str(d / "bad.png"), labels=y.tolist())


def run(args, tiny_model, input=None):
    return CliRunner().invoke(app, ["predict", "--model", str(tiny_model), *args], input=input)


def test_library_rows_in_order_with_top_k(tiny_model, files):
    m = load_model(tiny_model)
    rows = list(predict_inputs(m, [*files["images"], files["npy"]], top_k=4, keep_probs=True, image_chunk=2))
    assert [r.input for r in rows] == files["images"] + [f"{files['npy']}[{i}]" for i in range(4)]
    for r in rows:
        assert r.error is None and len(r.top) == 4 and r.top[0] == (r.label, r.confidence)
        assert [p for _, p in r.top] == sorted((p for _, p in r.top), reverse=True)
        assert r.probs.sum() == pytest.approx(1, abs=1e-4) and r.name == str(r.label)
    assert sum(r.label == y for r, y in zip(rows, files["labels"])) >= 5


def test_sigmoid_outputs_are_normalised():
    net = Network.init(dense_layers((784, 10), "relu", "sigmoid"), (1, 28, 28), "quadratic", seed=0)
    m = Model(net, tuple("0123456789"))
    x = np.random.default_rng(0).random((5, 28, 28), dtype=np.float32)
    p = m.scores(x)
    assert not np.allclose(m.predict_proba(x).sum(axis=1), 1)          # the raw outputs do not sum to 1
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-5)
    assert np.array_equal(p.argmax(axis=1), m.predict_proba(x).argmax(axis=1))


def test_a_conv_model_predicts_through_the_library(tmp_path, files):
    """predict needs only the model file and NumPy: a conv model's rows are its scores."""
    from digitnet.modelfile import save_model

    layers = architecture(parse_layers("conv4x3p1,pool2,dense8"), (1, 28, 28), 10, "softmax")
    model = load_model(save_model(Model(Network.init(layers, (1, 28, 28), seed=4), tuple("0123456789")),
                                  tmp_path / "conv.npz"))
    rows = list(predict_inputs(model, [files["npy"]], keep_probs=True, top_k=10))
    x = np.load(files["npy"]).astype(np.float32) / 255
    expected = model.scores(x)
    assert [r.label for r in rows] == expected.argmax(axis=1).tolist()
    np.testing.assert_allclose(np.array([r.probs for r in rows]), expected, rtol=1e-6)


def test_csv_and_tsv_parse_with_probs(tiny_model, files):
    for fmt, sep in (("csv", ","), ("tsv", "\t")):
        r = run([*files["images"], "--format", fmt, "--probs"], tiny_model)
        assert r.exit_code == 0, r.output
        table = list(csv.reader(io.StringIO(r.stdout), delimiter=sep))
        assert table[0] == ["input", "label", "confidence"] + [f"p{i}" for i in range(10)]
        assert [row[0] for row in table[1:]] == files["images"]
        for row in table[1:]:
            probs = [float(v) for v in row[3:]]
            assert int(row[1]) == int(np.argmax(probs)) and float(row[2]) == max(probs)


def test_jsonl_rows_errors_and_exit_code(tiny_model, files):
    r = run([files["images"][0], files["bad"], files["npy"], "--format", "jsonl", "--top-k", "2"], tiny_model)
    assert r.exit_code == 1
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["input"] for row in rows] == [files["images"][0], files["bad"]] + [f"{files['npy']}[{i}]" for i in range(4)]
    assert set(rows[0]) == {"input", "label", "name", "confidence", "top"} and len(rows[0]["top"]) == 2
    assert rows[0]["top"][0] == [rows[0]["label"], rows[0]["confidence"]]
    assert set(rows[1]) == {"input", "error"} and "not an image" in rows[1]["error"]
    assert r.stderr.count("\n") == 1 and r.stderr.startswith(f"digitnet: error: {files['bad']}: ")


def test_csv_error_row_keeps_its_place(tiny_model, files):
    r = run([files["bad"], files["images"][0], "--format", "csv"], tiny_model)
    assert r.exit_code == 1
    table = list(csv.reader(io.StringIO(r.stdout)))
    assert table[1] == [files["bad"], "", ""] and table[2][0] == files["images"][0]


def test_table_with_show_and_low_confidence_flag(tiny_model, files):
    r = run([files["images"][0], files["bad"], "--show"], tiny_model)
    assert r.exit_code == 1
    assert "network saw" in r.stdout and "@" in r.stdout          # the 28×28 input, drawn
    assert "error" in r.stdout and "not an image" in r.stdout
    noise = files["dir"] / "noise.npy"
    np.save(noise, np.random.default_rng(1).random((30, 784), dtype=np.float32))
    r = run([str(noise)], tiny_model)
    rows = [line for line in r.stdout.splitlines() if "noise.npy[" in line]
    assert len(rows) == 30
    if any(" ?" in line for line in rows):
        assert "low confidence" in r.stdout


def test_stdin_paths(tiny_model, files):
    r = run(["-", "--format", "jsonl"], tiny_model, input="\n".join(files["images"]) + "\n")
    assert r.exit_code == 0
    assert [json.loads(line)["input"] for line in r.stdout.splitlines()] == files["images"]


@pytest.mark.parametrize("args", [["--format", "xml"], ["--top-k", "0"], ["--top-k", "11"], ["--show", "--format", "csv"], []])
def test_usage_errors_exit_2(tiny_model, files, args):
    r = run([*([files["images"][0]] if args else []), *args], tiny_model)
    assert r.exit_code == 2


def test_missing_model_is_one_line(files, tmp_path):
    r = CliRunner().invoke(app, ["predict", "--model", str(tmp_path / "none.npz"), files["images"][0]])
    assert r.exit_code == 1 and r.stderr.count("\n") == 1 and "none.npz: no such" in r.stderr


def test_digitnet_model_env_is_the_default(tiny_model, files, monkeypatch):
    monkeypatch.setenv("DIGITNET_MODEL", str(tiny_model))
    r = CliRunner().invoke(app, ["predict", files["images"][0], "--format", "csv"])
    assert r.exit_code == 0 and r.stdout.splitlines()[1].startswith(files["images"][0] + ",")


def test_preprocessing_helps_on_person_made_images(tiny_model, tmp_path):
    rows = write_set(tmp_path, 60, seed=3)
    m = load_model(tiny_model)
    paths = [str(tmp_path / r["file"]) for r in rows]
    truth = [r["label"] for r in rows]
    with_pp = np.mean([r.label == y for r, y in zip(predict_inputs(m, paths), truth)])
    without = np.mean([r.label == y for r, y in zip(predict_inputs(m, paths, preprocess=False), truth)])
    assert with_pp > without + 0.2


def test_real_subprocess_without_numba(tiny_model, files):
    r = subprocess.run([str(DIGITNET), "predict", "--model", str(tiny_model), files["images"][0], "--format", "jsonl"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["input"] == files["images"][0]
    code = ("import sys; from digitnet.cli import app\n"
            f"try: app(['predict', '--model', {str(tiny_model)!r}, {files['images'][0]!r}, {files['npy']!r}])\n"
            "except SystemExit as e: assert e.code in (0, None), e.code\n"
            "print('numba' in sys.modules, 'digitnet.kernels' in sys.modules, file=sys.stderr)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stderr.strip().splitlines()[-1] == "False False", r.stderr
