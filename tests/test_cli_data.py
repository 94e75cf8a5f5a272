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
