"""`digitnet data list` and `data show` as scripts use them: the data set named as every
other command names it (--data/-d) or by the older positional SPEC, and pipe-safe output."""

from __future__ import annotations

import json

from typer.testing import CliRunner

import cli_helpers
from digitnet.cli import app


def test_show_takes_the_data_set_as_every_command_does_or_positionally():
    """`data show -d NAME` is `data show NAME`; naming two different sets is a usage error
    (exit 2, one line); with none, the embedded set."""
    args = ["-n", "2", "--split", "test", "--json"]
    positional = json.loads(cli_helpers.run(["data", "show", "fonts", *args]).stdout)
    for spelling in (["-d", "fonts"], ["--data", "fonts"], ["fonts", "--data", "fonts"]):
        r = cli_helpers.run(["data", "show", *spelling, *args])
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout) == positional
    assert positional["name"] == "fonts"
    assert json.loads(cli_helpers.run(["data", "show", *args]).stdout)["name"] == "embedded"
    both = cli_helpers.run(["data", "show", "fonts", "-d", "embedded"])
    err = both.stderr.decode()
    assert both.returncode == 2 and err.count("\n") == 1 and "given twice with different values" in err


def test_show_help_gives_the_default_once():
    out = " ".join(CliRunner().invoke(app, ["data", "show", "--help"], terminal_width=80).output.split())
    assert out.count("[default: embedded]") == 1 and "-d, --data SPEC" in out


def test_list_in_a_pipe_keeps_its_note_on_one_line(tmp_path):
    """Piped at COLUMNS=80, the table is printed at its own width and the closing note (with
    a long data folder) stays one line; no line is padded with spaces."""
    home = tmp_path / ("a-long-folder-name-" * 3)
    r = cli_helpers.run(["data", "list"], XDG_DATA_HOME=home, COLUMNS=80)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.decode().splitlines()
    note = lines[-1]
    assert note.startswith("Downloads go to ") and len(note) > 80
    assert note.endswith(f"{home / 'digitnet' / 'imported.json'}.")
    assert not [line for line in lines if line.endswith(" ")]


def test_list_shows_every_shipped_set_as_here_with_its_file(tmp_path):
    """The sets that ship inside the package (embedded, fonts) are here wherever digitnet is
    installed, with the file's path and the counts read from it (checked here with NumPy);
    the table says so too, in a pipe."""
    import re
    from pathlib import Path

    import numpy as np

    import digitnet

    resources = Path(digitnet.__file__).resolve().parent / "resources"
    r = cli_helpers.run(["data", "list", "--json"], XDG_DATA_HOME=tmp_path)
    assert r.returncode == 0, r.stderr
    known = {s["name"]: s for s in json.loads(r.stdout)["known"]}
    for name, file in (("embedded", "mnist-embedded.npz"), ("fonts", "fonts-digits.npz")):
        with np.load(resources / file) as z:
            train, test = len(z["train_labels"]), len(z["test_labels"])
        s = known[name]
        assert s["present"] and Path(s["path"]).resolve() == (resources / file).resolve(), s
        assert (s["train"], s["test"], s["size"]) == (train, test, (resources / file).stat().st_size), s
    table = cli_helpers.run(["data", "list"], XDG_DATA_HOME=tmp_path, COLUMNS=80).stdout.decode()
    row = next(line for line in table.splitlines() if re.search(r"\bfonts\b", line))
    assert re.search(r"\byes\b", row) and "fonts-digits.npz" in row, table
