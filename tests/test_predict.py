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

import cli_helpers
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
    assert [r.input for r in rows] == files["images"] + [files["npy"]] * 4
    assert [r.index for r in rows] == [None] * 3 + [0, 1, 2, 3]
    assert [r.entry for r in rows] == files["images"] + [f"{files['npy']}[{i}]" for i in range(4)]
    for r in rows:
        assert r.error is None and len(r.top) == 4 and r.top[0] == (r.label, r.confidence)
        assert [p for _, p in r.top] == sorted((p for _, p in r.top), reverse=True)
        assert r.probs.sum() == pytest.approx(1, abs=1e-4) and r.name == str(r.label)
    assert sum(r.label == y for r, y in zip(rows, files["labels"])) >= 5


def test_keep_steps_gives_each_image_its_preprocessing_steps(tiny_model, files):
    """keep_steps: an image row carries the pictures of its own preprocessing pass (as
    ``step_panels`` makes them from the file), an array row none; without it, no row does."""
    from digitnet.preprocess import load_image, step_panels

    m = load_model(tiny_model)
    rows = list(predict_inputs(m, [*files["images"], files["npy"]], keep_images=True, keep_steps=True, image_chunk=2))
    for r in rows[:3]:
        want = step_panels(load_image(r.input))
        assert [t for t, _ in r.steps] == [t for t, _ in want[:-1]] and r.steps[0][0] == "image"
        assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(r.steps, want))
        assert np.array_equal(r.image, want[-1][1])
    assert all(r.steps is None for r in rows[3:])
    assert all(r.steps is None for r in predict_inputs(m, files["images"]))


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


HEADER = ["input", "label", "confidence", "index", "name", "top", "error"]


def test_csv_and_tsv_parse_with_probs(tiny_model, files):
    m = load_model(tiny_model)
    for fmt, sep in (("csv", ","), ("tsv", "\t")):
        r = run([*files["images"], "--format", fmt, "--probs"], tiny_model)
        assert r.exit_code == 0, r.output
        table = list(csv.DictReader(io.StringIO(r.stdout), delimiter=sep))
        header = list(table[0])       # scripts read columns by name: more may come, these stay
        assert header[:3] == HEADER[:3] and set(HEADER) <= set(header) and header[-10:] == [f"p{i}" for i in range(10)]
        assert [row["input"] for row in table] == files["images"] and len(table) == 3
        for row in table:
            probs = [float(row[f"p{i}"]) for i in range(10)]
            assert int(row["label"]) == int(np.argmax(probs)) and float(row["confidence"]) == max(probs)
            assert row["name"] == m.class_names[int(row["label"])] and row["index"] == "" and row["error"] == ""


def test_csv_error_reason_index_column_and_top_k(tiny_model, files):
    """The CSV keeps an error's reason, names array rows by index (not path[0]) and lists --top-k."""
    m = load_model(tiny_model)
    r = run([files["images"][0], files["bad"], files["npy"], "--format", "csv", "--top-k", "4"], tiny_model)
    assert r.exit_code == 1
    table = list(csv.DictReader(io.StringIO(r.stdout)))
    assert [(row["input"], row["index"]) for row in table] == [(files["images"][0], ""), (files["bad"], "")] + \
        [(files["npy"], str(i)) for i in range(4)]
    bad = table[1]
    assert "not an image" in bad["error"] and bad["label"] == bad["confidence"] == bad["top"] == ""
    expected = m.scores(np.load(files["npy"]).astype(np.float32) / 255)           # (4, 10)
    for row, p in zip(table[2:], expected):
        top = [pair.split(":") for pair in row["top"].split()]
        assert [int(label) for label, _ in top] == list(np.argsort(-p, kind="stable")[:4])
        assert [float(v) for _, v in top] == pytest.approx(np.sort(p)[::-1][:4], abs=1e-6)
        assert row["error"] == ""


@pytest.mark.parametrize("fmt", ["table", "jsonl", "csv"])
def test_top_k_in_every_format(tiny_model, files, fmt):
    r = run([files["npy"], "--format", fmt, "--top-k", "5"], tiny_model)
    assert r.exit_code == 0, r.output
    if fmt == "jsonl":
        counts = [len(json.loads(line)["top"]) for line in r.stdout.splitlines()]
    elif fmt == "csv":
        counts = [len(row["top"].split()) for row in csv.DictReader(io.StringIO(r.stdout))]
    else:
        assert "top 5" in r.stdout.splitlines()[0]
        counts = [line.count("%") - 1 for line in r.stdout.splitlines() if "four.npy[" in line]   # confidence, 5 guesses
    assert counts == [5] * 4


def test_jsonl_rows_errors_and_exit_code(tiny_model, files):
    r = run([files["images"][0], files["bad"], files["npy"], "--format", "jsonl", "--top-k", "2"], tiny_model)
    assert r.exit_code == 1
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [(row["input"], row["index"]) for row in rows] == [(files["images"][0], None), (files["bad"], None)] + \
        [(files["npy"], i) for i in range(4)]
    assert {"input", "index", "label", "name", "confidence", "top"} <= set(rows[0]) and len(rows[0]["top"]) == 2
    assert rows[0]["top"][0] == [rows[0]["label"], rows[0]["confidence"]] and "error" not in rows[0]
    assert {"input", "index", "error"} <= set(rows[1]) and "label" not in rows[1] and "not an image" in rows[1]["error"]
    assert r.stderr.count("\n") == 1 and r.stderr.startswith(f"digitnet: error: {files['bad']}: ")


def test_csv_error_row_keeps_its_place(tiny_model, files):
    r = run([files["bad"], files["images"][0], "--format", "csv"], tiny_model)
    assert r.exit_code == 1
    table = list(csv.DictReader(io.StringIO(r.stdout)))
    assert [table[0][c] for c in ("input", "label", "confidence", "index", "name", "top")] == [files["bad"], "", "", "", "", ""]
    assert "not an image" in table[0]["error"] and table[1]["input"] == files["images"][0]


def test_table_with_show(tiny_model, files):
    r = run([files["images"][0], files["bad"], "--show"], tiny_model)
    assert r.exit_code == 1
    assert "network saw" in r.stdout and "@" in r.stdout          # the 28×28 input, drawn
    assert "error" in r.stdout and "not an image" in r.stdout


def test_low_confidence_answers_are_flagged(tmp_path, files):
    """A network with zero weights scores every class 10%: every answer is flagged and
    counted; a confident one (the tiny model's on a real digit) is not."""
    from digitnet.modelfile import save_model

    net = Network.init(dense_layers((784, 10), "relu", "softmax"), (1, 28, 28), "cross-entropy", seed=0)
    net.params[:] = 0
    path = save_model(Model(net, tuple("0123456789")), tmp_path / "unsure.npz")
    r = run([files["npy"]], path)
    rows = [line for line in r.stdout.splitlines() if "four.npy[" in line]
    assert len(rows) == 4 and all("10.0% ?" in line for line in rows), r.stdout
    assert "low confidence (below 60%): 4" in " ".join(r.stdout.split())


def test_stdin_paths(tiny_model, files):
    r = run(["-", "--format", "jsonl"], tiny_model, input="\n".join(files["images"]) + "\n")
    assert r.exit_code == 0
    assert [json.loads(line)["input"] for line in r.stdout.splitlines()] == files["images"]


@pytest.mark.parametrize("args", [["--format", "xml"], ["--top-k", "0"], ["--top-k", "11"], ["--show", "--format", "csv"], [],
                                  ["-f", "csv", "--format", "tsv"], ["--json", "--format", "csv"]])
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
    """predict and evaluate (on a data set and a folder) never import numba."""
    r = subprocess.run([str(DIGITNET), "predict", "--model", str(tiny_model), files["images"][0], "--format", "jsonl"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["input"] == files["images"][0]
    code = ("import sys; from digitnet.cli import app\n"
            f"try: app(['predict', '--model', {str(tiny_model)!r}, {files['images'][0]!r}, {files['npy']!r}])\n"
            "except SystemExit as e: assert e.code in (0, None), e.code\n"
            f"try: app(['evaluate', '--model', {str(tiny_model)!r}, '--show'])\n"
            "except SystemExit as e: assert e.code in (0, None), e.code\n"
            f"try: app(['evaluate', '--model', {str(tiny_model)!r}, '--data', {str(files['dir'])!r}])\n"
            "except SystemExit as e: assert e.code in (1,), e.code     # a folder without class folders\n"
            "print('numba' in sys.modules, 'digitnet.kernels' in sys.modules, file=sys.stderr)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stderr.strip().splitlines()[-1] == "False False", r.stderr


# ---------------------------------------------------------------------------------------------
# through the real console script, as scripts and pipelines use it

def test_old_spellings_and_json(tiny_model, files):
    """`-f csv` (from scripts written before --format lost its short form) still works; --json
    is --format jsonl."""
    old = run([files["npy"], "-f", "csv"], tiny_model)
    new = run([files["npy"], "--format", "csv"], tiny_model)
    assert old.exit_code == new.exit_code == 0 and old.stdout == new.stdout
    js = run([files["npy"], "--json"], tiny_model)
    assert js.stdout == run([files["npy"], "--format", "jsonl"], tiny_model).stdout
    assert [json.loads(line)["index"] for line in js.stdout.splitlines()] == [0, 1, 2, 3]


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "table"])
def test_stdin_paths_stream_through_the_console_script(tiny_model, files, fmt):
    """Each path written to `predict -` is answered (and flushed) before the next is written:
    the writer waits for every answer, so a command that reads ahead would hang here."""
    import select

    import os

    p = subprocess.Popen([str(DIGITNET), "predict", "-m", str(tiny_model), "-", "--format", fmt], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_helpers.env())
    out = b""
    try:
        for i, path in enumerate(files["images"]):
            p.stdin.write(path.encode() + b"\n")
            p.stdin.flush()
            want = i + 1 + (fmt != "jsonl")                            # lines by now: a header first
            while out.count(b"\n") < want:
                ready, _, _ = select.select([p.stdout], [], [], 60)
                assert ready, f"no answer to {path} while the next path was held back"
                out += os.read(p.stdout.fileno(), 65536)
            assert out.count(b"\n") == want
    finally:
        p.stdin.close()
        p.wait(timeout=60)
    assert p.returncode == 0
    rows = out.decode().splitlines()[fmt != "jsonl":]
    assert [json.loads(r)["input"] if fmt == "jsonl" else r.split(",")[0].split()[0] for r in rows] == files["images"]


def test_image_bytes_on_stdin(tiny_model, files):
    png = Path(files["images"][1]).read_bytes()
    r = cli_helpers.run(["predict", "-m", tiny_model, "-", "--json"], input=png)
    assert r.returncode == 0, r.stderr
    row = json.loads(r.stdout)
    by_path = json.loads(cli_helpers.run(["predict", "-m", tiny_model, files["images"][1], "--json"]).stdout)
    assert row["input"] == "-" and row["label"] == by_path["label"] and row["confidence"] == by_path["confidence"]
    junk = cli_helpers.run(["predict", "-m", tiny_model, "-"], input=bytes(range(256)))
    assert junk.returncode == 1 and junk.stderr.decode().startswith("digitnet: error: -: not an image")


@pytest.mark.parametrize("command", ["predict --format table", "predict --format csv", "predict --format tsv",
                                     "predict --format jsonl", "inspect noise -n 600 --show 600"])
def test_a_closed_pipe_exits_quietly_with_one_code(tiny_model, tmp_path, command):
    """`digitnet … | head -1`: no message, and the same exit code (0) whatever the format or
    command (the predict table and rich's own output used to exit 1)."""
    np.save(tmp_path / "big.npy", np.random.default_rng(0).integers(0, 256, (20000, 784), dtype=np.uint8))
    args = f"{command} '{tmp_path / 'big.npy'}'" if command.startswith("predict") else command
    r = subprocess.run(["bash", "-c", f"'{DIGITNET}' {args} -m '{tiny_model}' | head -1 > /dev/null; echo ${{PIPESTATUS[0]}}"],
                       capture_output=True, text=True, timeout=120, env=cli_helpers.env())
    assert r.stdout.strip() == "0" and r.stderr == ""


@pytest.fixture(scope="module")
def odd_names(tmp_path_factory, embedded):
    """Images whose names hold rich markup, a terminal escape sequence and a non-UTF-8 byte."""
    import os

    d = tmp_path_factory.mktemp("names")
    names = [b"[bold]seven[i].png", b"esc\x1b[31mred.png", b"caf\xe9.png"]
    for raw, img in zip(names, embedded.test_images[:3]):
        Image.fromarray(255 - img).resize((56, 56)).save(os.fsdecode(os.fsencode(str(d)) + b"/" + raw), format="PNG")
    return d, names


def test_names_are_data_not_markup(tiny_model, odd_names):
    """Table: each name printed literally (markup kept, control bytes as \\x1b, a bad byte as
    \\xe9), never crashing; csv: the exact bytes of each name; jsonl: valid JSON whose
    strings give the exact name back (os.fsencode)."""
    import os

    d, names = odd_names
    paths = [os.fsencode(str(d)) + b"/" + n for n in names]
    strict = {"PYTHONIOENCODING": "utf-8:strict"}         # stdout as in a UTF-8 locale (not C/POSIX)
    table = cli_helpers.run(["predict", "-m", tiny_model, *[os.fsdecode(p) for p in paths]], **strict)
    assert table.returncode == 0, table.stderr
    out = table.stdout.decode()
    assert "[bold]seven[i].png" in out and "esc\\x1b[31mred.png" in out and "caf\\xe9.png" in out
    assert "\x1b" not in out
    csv_out = cli_helpers.run(["predict", "-m", tiny_model, "--format", "csv", *[os.fsdecode(p) for p in paths]], **strict)
    assert csv_out.returncode == 0, csv_out.stderr
    assert [line.split(b",")[0] for line in csv_out.stdout.splitlines()[1:]] == paths
    js = cli_helpers.run(["predict", "-m", tiny_model, "--json", *[os.fsdecode(p) for p in paths]], **strict)
    assert js.returncode == 0, js.stderr
    assert [os.fsencode(json.loads(line)["input"]) for line in js.stdout.decode("ascii").splitlines()] == paths
    missing = cli_helpers.run(["predict", "-m", tiny_model, os.fsdecode(b"gone\x1b]0;pwned\x07\xff.png")], **strict)
    assert missing.returncode == 1 and missing.stderr.count(b"\n") == 1 and b"\x1b" not in missing.stderr
    assert b"gone\\x1b]0;pwned\\x07\\xff.png: no such file" in missing.stderr


def test_tables_in_a_pipe_are_never_wrapped_cut_or_padded(tiny_model, tmp_path, files):
    long = tmp_path / ("a-folder-with-a-rather-long-name-" * 3) / "and-a-long-file-name-too.png"
    long.parent.mkdir()
    long.write_bytes(Path(files["images"][0]).read_bytes())
    r = cli_helpers.run(["predict", "-m", tiny_model, long, files["npy"], "--top-k", "10"], COLUMNS=80)
    lines = [line for line in r.stdout.decode().splitlines() if line.startswith(("input", "/"))]   # the table
    assert r.returncode == 0 and len(lines) == 6
    assert lines[1].startswith(str(long) + " ") and "…" not in r.stdout.decode()
    assert all(line == line.rstrip() for line in lines)
    assert max(map(len, lines)) > 80                                # one line per row, however long


@pytest.mark.parametrize("columns", [40, 60, 200])
def test_in_a_narrow_terminal_columns_go_before_numbers_are_cut(tiny_model, files, columns):
    """At any width, each row keeps its whole label and confidence ("99.6%", never "9…");
    the top-k column goes first, the input's name is shortened from the left."""
    m = load_model(tiny_model)
    expected = m.scores(np.load(files["npy"]).astype(np.float32) / 255)
    code, out = cli_helpers.run_in_terminal(["predict", "-m", tiny_model, files["npy"]], columns)
    assert code == 0, out
    assert all(len(line) <= columns for line in out.splitlines()), out
    lines = [line for line in out.splitlines() if line.startswith(("input", "…", "/"))]        # the table
    assert len(lines) == 5, out
    for line, p in zip(lines[1:], expected):
        assert f" {p.argmax()} " in line and f"{p.max():.1%}" in line, (line, columns)
    assert ("top 3" in lines[0]) == (columns >= 60)


def _peak_rss_mb(args) -> tuple[int, float]:
    """(exit code, peak resident memory in MB) of the console script, measured by a wrapper
    process whose only child it is."""
    code = ("import resource, subprocess, sys\n"
            "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
            "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)")
    out = subprocess.run([sys.executable, "-c", code, str(DIGITNET), *map(str, args)], capture_output=True, text=True,
                         timeout=300, env=cli_helpers.env())
    rc, mb = out.stdout.split()
    return int(rc), float(mb)


def test_a_giant_csv_line_through_the_console_script(tiny_model, tmp_path, embedded):
    """`predict` on a CSV holding one 60 MB line: the same peak memory as on a small CSV (it
    used to hold the line and parse it: ~1 GB), and the rows after the line are still there."""
    good = ",".join(str(v) for v in embedded.test_images[0].ravel()).encode() + b"\n"
    (tmp_path / "small.csv").write_bytes(good * 3)
    (tmp_path / "giant.csv").write_bytes(good + b"1," * 30_000_000 + b"1\n" + good)
    rc_small, small = _peak_rss_mb(["predict", "-m", tiny_model, tmp_path / "small.csv"])
    rc_giant, giant = _peak_rss_mb(["predict", "-m", tiny_model, tmp_path / "giant.csv"])
    assert rc_small == 0 and rc_giant == 1
    assert giant < small + 30, f"{giant:.0f} MB against {small:.0f} MB for a small CSV"
    r = cli_helpers.run(["predict", "-m", tiny_model, tmp_path / "giant.csv", "--format", "csv"])
    rows = list(csv.DictReader(io.StringIO(r.stdout.decode())))
    assert [row["index"] for row in rows] == ["0", "1", "2"] and "longer than" in rows[1]["error"]
    assert rows[0]["label"] == rows[2]["label"] != ""
