"""digitnet.render: the exact plain-text pictures, the colour cells, layouts that fit, and the
RGB arrays behind --png."""

from __future__ import annotations

import re

import numpy as np
import pytest
from rich.console import Console
from rich.text import Text

from digitnet import render
from digitnet.render import RAMP


def plain_lines(text: Text) -> list[str]:
    return text.plain.split("\n")


def colour_console(width=80) -> Console:
    return Console(record=True, force_terminal=True, color_system="truecolor", width=width, file=open("/dev/null", "w"))


def test_ramp_char_ends_and_middle():
    assert render.ramp_char(0.0) == " " and render.ramp_char(1.0) == "@"
    assert render.ramp_char(-3) == " " and render.ramp_char(7) == "@"
    assert render.ramp_char(0.5) in RAMP[4:6]


def test_digit_plain_averages_pairs_of_rows():
    img = np.zeros((4, 3))
    img[0, 0] = img[1, 0] = 1.0          # both rows of the pair lit: '@'
    img[2, 1] = 1.0                      # one of two lit: the middle of the ramp
    lines = plain_lines(render.digit(img, plain=True))
    assert lines == ["@  ", f" {render.ramp_char(0.5)} "]


def test_digit_odd_height_and_uint8():
    lines = plain_lines(render.digit(np.full((3, 2), 255, np.uint8), plain=True))
    assert lines == ["@@", "@@"]


def test_heatmap_plain_is_diverging():
    v = np.array([[-2.0, 0.0, 2.0], [-2.0, 0.0, 2.0]])
    assert plain_lines(render.heatmap(v, plain=True)) == [" " + render.ramp_char(0.5) + "@"]
    # with scale 4, ±2 is half way from zero
    assert plain_lines(render.heatmap(v, plain=True, scale=4.0)) == [render.ramp_char(0.25) + render.ramp_char(0.5) + render.ramp_char(0.75)]


def test_colour_cells_use_half_blocks_and_blank_nan():
    v = np.array([[1.0, np.nan, np.nan], [-1.0, 0.5, np.nan]])
    text = render.heatmap(v, plain=False, scale=1.0)
    assert text.plain == "▀▄ "
    con = colour_console()
    con.print(text)
    svg = con.export_text(styles=True)
    assert "\x1b[" in svg            # it is coloured


def test_diverging_rgb_matches_the_terminal_colours():
    rgb = render.diverging_rgb(np.array([-1.0, 0.0, 0.5, 1.0, 3.0]))
    assert rgb.dtype == np.uint8 and rgb.shape == (5, 3)
    assert rgb[0, 2] == 255 and rgb[0, 0] < rgb[0, 2]          # blue negative
    assert rgb[1].tolist() == [0, 0, 0]                         # black zero
    assert rgb[3, 0] == 255 and rgb[3, 2] < rgb[3, 0]           # red positive
    assert rgb[4].tolist() == rgb[3].tolist()                   # saturates
    for v, (r, g, b) in zip((-1.0, 0.5, 1.0), (rgb[0], rgb[2], rgb[3])):
        assert render._diverging(v) == f"rgb({r},{g},{b})"


def test_grey_rgb():
    assert render.grey_rgb(np.array([[0.0, 1.0]])).tolist() == [[[0, 0, 0], [255, 255, 255]]]


@pytest.mark.parametrize("k,cols,zoom,gap", [(16, 4, 4, 2), (5, 3, 2, 1), (1, 1, 8, 0), (3, 9, 1, 3)])
def test_image_grid_dimensions(k, cols, zoom, gap):
    tiles = np.zeros((k, 28, 28, 3), np.uint8)
    tiles[:, 0, 0] = 255
    out = render.image_grid(tiles, cols, zoom=zoom, gap=gap)
    c = min(cols, k)
    rows = -(-k // c)
    assert out.shape == (rows * 28 * zoom + (rows - 1) * gap, c * 28 * zoom + (c - 1) * gap, 3)
    assert out[0, 0].tolist() == [255, 255, 255] and out[zoom, zoom].tolist() == [0, 0, 0]


def test_tile_side_by_side_and_wrapping():
    a, b, c = Text("aa\naa"), Text("bbb"), Text("c\nc\nc")
    assert plain_lines(render.tile([a, b, c], width=80, gap=1)) == ["aa bbb c", "aa     c", "       c"]
    wrapped = plain_lines(render.tile([a, b, c], width=6, gap=1))
    assert wrapped == ["aa bbb", "aa", "", "c", "c", "c"]
    assert all(len(line) <= 6 for line in wrapped)


def test_labelled_cuts_or_widens():
    assert plain_lines(render.labelled("a long label", Text("xxxx"))) == ["a l…", "xxxx"]
    assert plain_lines(render.labelled("a long label", Text("xxxx"), fit=False)) == ["a long label", "xxxx"]


def test_heatmap_grid_fits_width_in_plain_text():
    maps = np.random.default_rng(0).normal(size=(5, 28, 28))
    text = render.heatmap_grid(maps, [f"#{i}" for i in range(5)], plain=True, width=80)
    lines = plain_lines(text)
    assert max(len(line) for line in lines) <= 80
    assert lines[0].startswith("#0") and "#1" in lines[0]           # two maps per row at 80 columns
    assert sum(bool(re.match(r"#\d", line)) for line in lines) == 3  # rows of 2, 2, 1
    assert set("".join(lines)) <= set(RAMP) | set("#01234 ")
    small = render.heatmap_grid(render.shrink2(maps), [f"#{i}" for i in range(5)], plain=True, width=80)
    assert re.findall(r"#\d", plain_lines(small)[0]) == ["#0", "#1", "#2", "#3", "#4"]  # 14 wide: all in one row


def test_shrink2_and_pool_max_abs():
    img = np.arange(16, dtype=float).reshape(4, 4)
    assert render.shrink2(img).tolist() == [[2.5, 4.5], [10.5, 12.5]]
    assert render.shrink2(np.ones((2, 3, 5))).shape == (2, 2, 3)
    m = np.array([[1.0, -5.0, 2.0, 0.0, 3.0]])
    pooled, k = render.pool_max_abs(m, 3)
    assert k == 2 and pooled.tolist() == [[-5.0, 2.0, 3.0]]
    same, k1 = render.pool_max_abs(m, 10)
    assert k1 == 1 and same is m


def test_robust_scale_ignores_an_outlier():
    v = np.r_[np.full(999, 0.1), 100.0]
    assert render.robust_scale(v) == pytest.approx(0.1)
    assert render.robust_scale(np.zeros(4)) == 1.0


def test_activation_cells_plain_columns():
    text = render.activation_cells(np.array([0.0, 1.0, 0.5, 1.0, 0.0]), plain=True, rows=4)
    # two rows per column in plain text (rows // 2), filled top to bottom, then the next column
    assert plain_lines(text) == [" " + render.ramp_char(0.5), "@@"]          # trailing blanks trimmed
    scaled = render.activation_cells(np.array([0.0, 2.0]), plain=True, rows=4, vmax=4.0)
    assert plain_lines(scaled) == [" ", render.ramp_char(0.5)]
    wide = render.activation_cells(np.array([0.0, 1.0]), plain=True, rows=4, cell_width=2)
    assert plain_lines(wide) == [" ", "@@"]


def test_activation_cells_colour_two_neurons_per_line():
    text = render.activation_cells(np.linspace(0, 1, 10), plain=False, rows=4)
    # 10 neurons, 4 per column: columns of 4, 4, 2; the last column's second line is empty
    assert plain_lines(text) == ["▀▀▀", "▀▀ "]


def test_output_bars_mark_the_winner():
    out = np.array([0.1, 0.7, 0.2])
    lines = plain_lines(render.output_bars(out, ["0", "1", "2"], plain=True, width=10))
    assert len(lines) == 3 and lines[1].endswith("<") and not lines[0].endswith("<")
    assert lines[1].startswith("1 #######...") and "70.0%" in lines[1]
    marked = plain_lines(render.output_bars(out, ["0", "1", "2"], plain=True, mark=2))
    assert marked[2].endswith("<")


def test_count_bars():
    lines = plain_lines(render.count_bars([0, 30, 10], ["a", "b", "c"], plain=True, width=10))
    assert lines[1].startswith("b ##########") and lines[1].endswith("75.0%")
    assert lines[0].startswith("a ..........")


def test_line_chart_plain():
    hist = [0.5, 0.8, None, 0.9]
    text = render.line_chart([("train", hist, "cyan", "●", "*"), ("val", [0.6, 0.7, 0.75, 0.85], "magenta", "○", "o")],
                             plain=True, height=5, width=40, fmt=lambda v: f"{v:.0%}")
    lines = plain_lines(text)
    assert lines[0].startswith("90% |") and lines[4].startswith("50% |")
    assert "*" in lines[0] and "*" in lines[4]                      # max at the top, min at the bottom
    assert lines[0].index("*") > lines[4].index("*")                # later epochs to the right
    assert lines[-1].strip() == "* train   o val"
    assert max(len(line) for line in lines) <= 40 + 6
    long = render.line_chart([("x", list(range(200)), "cyan", "●", "*")], plain=True, width=30)
    assert max(len(line) for line in plain_lines(long)) <= 30 + len("199.000") + 2
    assert render.line_chart([("x", [None], "c", "●", "*")], plain=True).plain == "(no history)"


def test_existing_renderers_still_work():
    assert render.bar(0.5, 10, plain=True) == "#####....."
    assert len(render.sparkline([1, 2, 3], plain=True)) == 3
    con = Console(width=100, file=open("/dev/null", "w"), record=True, no_color=True)
    con.print(render.confusion_table(np.eye(3, dtype=int) * 5, ["a", "b", "c"], plain=True))
    assert "5" in con.export_text()


def test_shade_is_grey_on_its_own_scale():
    v = np.array([[0.0, 2.0, 4.0], [0.0, 2.0, 4.0]])
    assert plain_lines(render.shade(v, plain=True)) == [" " + render.ramp_char(0.5) + "@"]      # default: its max
    assert plain_lines(render.shade(v, plain=True, vmax=8.0)) == [" " + render.ramp_char(0.25) + render.ramp_char(0.5)]
    assert plain_lines(render.shade(np.zeros((2, 2)), plain=True)) == ["  "]                       # all zero: black


def test_shade_grid_scales_each_map_or_all_alike():
    maps = np.stack([np.ones((2, 3)), 4 * np.ones((2, 3))])
    own = plain_lines(render.shade_grid(maps, ["a", "b"], plain=True, width=80))
    assert own == ["a   b", "@@@ @@@"]                                 # each white at its own max
    alike = plain_lines(render.shade_grid(maps, ["a", "b"], plain=True, width=80, vmax=4.0))
    assert alike == ["a   b", render.ramp_char(0.25) * 3 + " @@@"]
    per_map = plain_lines(render.shade_grid(maps, ["a", "b"], plain=True, width=80, vmax=[2.0, 8.0]))
    assert per_map[1] == render.ramp_char(0.5) * 3 + " " + render.ramp_char(0.5) * 3


def test_enlarge_and_shrink2_peak():
    a = np.array([[1, 2], [3, 4]])
    assert render.enlarge(a, 2).tolist() == [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]
    assert render.enlarge(np.zeros((3, 2, 5)), 3).shape == (3, 6, 15)
    img = np.array([[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.5], [0.0] * 4, [0.0, 0.0, 0.25, 0.0]])
    assert render.shrink2(img, peak=True).tolist() == [[1.0, 0.5], [0.0, 0.25]]     # a thin stroke stays bright
    assert render.shrink2(img).tolist() == [[0.25, 0.125], [0.0, 0.0625]]


def test_enlarged_heatmap_draws_each_weight_exactly_in_plain_text():
    w = np.array([[1.0, -1.0], [0.0, 0.5]])
    lines = plain_lines(render.heatmap(render.enlarge(w, 2), plain=True, scale=1.0))
    assert lines == ["@@  ", render.ramp_char(0.5) * 2 + render.ramp_char(0.75) * 2]    # one line, two characters per weight


def test_filter_rows_one_row_per_filter_channels_under_their_labels():
    f = np.zeros((2, 3, 2, 2))
    f[0, 1, 0, 0] = 1.0                      # filter 0, channel 1, top left
    f[1, 2, 1, 1] = -1.0                     # filter 1, channel 2, bottom right
    lines = plain_lines(render.filter_rows(f, ["#0", "#10"], ["c0", "c1", "c2"], plain=True, scales=[1.0, 1.0], zoom=2))
    z = render.ramp_char(0.5)                # zero
    assert lines[0] == "     c0   c1   c2"
    assert lines[1] == "#0   " + " ".join([z * 4, "@@" + z * 2, z * 4])
    assert lines[2] == "     " + " ".join([z * 4] * 3)
    assert lines[3] == ""                                             # a blank line between filters
    assert lines[4] == "#10  " + " ".join([z * 4] * 3)
    assert lines[5] == "     " + " ".join([z * 4, z * 4, z * 2 + "  "]).rstrip()
    for line, _ in zip(lines[1:], range(2)):                         # each channel starts under its label
        for c in ("c0", "c1", "c2"):
            assert line[lines[0].index(c)] != " "


def _table_text(rows, plain, width=80) -> str:
    con = Console(width=width, file=open("/dev/null", "w"), record=True, no_color=plain, color_system=None if plain else "truecolor")
    con.print(render.layer_table(rows, plain))
    return con.export_text()


def test_layer_table_lists_every_layer_like_keras():
    rows = [{"layer": 1, "name": "conv6x5p2", "type": "conv", "output_shape": [6, 28, 28], "arrays": {"W": [6, 1, 5, 5], "b": [6]},
             "weight_layer": 1, "parameters": 156},
            {"layer": 2, "name": "relu", "type": "activation", "output_shape": [6, 28, 28], "arrays": {},
             "weight_layer": None, "parameters": 0},
            {"layer": 3, "name": "dense10", "type": "dense", "output_shape": [10], "arrays": {"W": [10, 1176], "b": [10]},
             "weight_layer": 2, "parameters": 11770}]
    text = _table_text(rows, plain=True)
    lines = [line.rstrip() for line in text.splitlines()]
    assert lines[0].split() == ["#", "layer", "type", "output", "shape", "weights", "params"]
    assert set(lines[1].strip()) == {"-"}                             # ASCII rules in plain text
    assert lines[2].split() == ["1", "conv6x5p2", "conv", "6×28×28", "W1", "6×1×5×5", "+", "b1", "156"]
    assert lines[3].split() == ["2", "relu", "activation", "6×28×28", "0"]
    assert lines[4].split() == ["3", "dense10", "dense", "10", "W2", "10×1176", "+", "b2", "11,770"]
    assert lines[6].split() == ["total", "11,926"]
    assert max(len(line) for line in lines) <= 80 and "─" not in text
    assert "─" in _table_text(rows, plain=False)                      # box rules in colour


def test_shape_text():
    assert render.shape_text((6, 28, 28)) == "6×28×28" and render.shape_text([120]) == "120"


# ---------------------------------------------------------------------------------------------
# narrow terminals: columns give way, numbers are never cut (issue 15)

LAYERS = [{"layer": 1, "name": "conv32x5", "type": "conv", "output_shape": [32, 24, 24],
           "arrays": {"W": [32, 1, 5, 5], "b": [32]}, "weight_layer": 1, "parameters": 832},
          {"layer": 2, "name": "dense256", "type": "dense", "output_shape": [256], "arrays": {"W": [256, 1024], "b": [256]},
           "weight_layer": 2, "parameters": 262400},
          {"layer": 3, "name": "dense10", "type": "dense", "output_shape": [10], "arrays": {"W": [10, 256], "b": [10]},
           "weight_layer": 3, "parameters": 2570}]


@pytest.mark.parametrize("width", [80, 60, 40, 30])
def test_layer_table_drops_columns_rather_than_cut_a_count(width):
    """fit_table on a terminal ``width`` wide: the type, then the weights, then the output
    shape go; every count is printed whole (32 + 262,400 + 2,570 make 265,802 by hand)."""
    con = Console(width=width, force_terminal=True, color_system=None, record=True, file=open("/dev/null", "w"))
    table = render.fit_table(con, lambda k: render.layer_table(LAYERS, True, k), render.LAYER_TABLE_STEPS)
    con.print(table)
    text = con.export_text()
    assert "…" not in text and max(len(line.rstrip()) for line in text.splitlines()) <= width
    rows = [line.split() for line in text.splitlines()]
    counts = [row[-1] for row in rows if row and row[0] in ("1", "2", "3")] + [rows[-1][-1]]
    assert counts == ["832", "262,400", "2,570", "265,802"]
    heads = [c.header for c in table.columns]
    assert heads[:2] == ["#", "layer"] and heads[-1] == "params"
    if width == 80:
        assert heads == ["#", "layer", "type", "output shape", "weights", "params"]
    if width <= 40:
        assert "type" not in heads and "weights" not in heads


def test_layer_table_compact_drops_in_the_stated_order():
    for k, gone in enumerate([(), ("type",), ("type", "weights"), ("type", "weights", "output shape")]):
        heads = [c.header for c in render.layer_table(LAYERS, True, k).columns]
        assert heads == [h for h in ("#", "layer", "type", "output shape", "weights", "params") if h not in gone]


CLOCK = re.compile(r"(?<![\d:])\d+:\d\d:\d\d(?![\d:])")


def _status(width: int) -> str:
    con = Console(width=width, force_terminal=True, color_system=None, record=True, file=open("/dev/null", "w"))
    line = render.StatusLine([("what", ("compiling the kernels (first run only)", "compiling", "")),
                              ("count", (" 20/300", "")), ("stats", ("loss 0.5000  acc 80.00%", "loss 0.5000", "")),
                              ("clock", ("0:00:17",)), ("eta", ("1:05 left", ""))],
                             ("what", "stats", "count", "what", "stats", "eta"))
    con.print(line)
    return con.export_text().rstrip("\n")


@pytest.mark.parametrize("width, expected", [
    (120, "compiling the kernels (first run only)  20/300 loss 0.5000  acc 80.00% 0:00:17 1:05 left"),
    (80, "compiling  20/300 loss 0.5000  acc 80.00% 0:00:17 1:05 left"),
    (50, "compiling  20/300 loss 0.5000 0:00:17 1:05 left"),
    (40, "compiling loss 0.5000 0:00:17 1:05 left"),
    (30, "loss 0.5000 0:00:17 1:05 left"),
    (20, "0:00:17 1:05 left"),
    (12, "0:00:17"),
])
def test_status_line_gives_way_in_order_and_never_cuts_the_clock(width, expected):
    assert _status(width).rstrip() == expected


# ---------------------------------------------------------------------------------------------
# in a pipe: text at its own length, no line padded (issue 15)

def _pipe_console(monkeypatch):
    import io

    out = io.StringIO()                      # not a terminal
    monkeypatch.setattr("sys.stdout", out)
    monkeypatch.setenv("COLUMNS", "80")
    return out, render.make_console()


def test_in_a_pipe_text_is_never_wrapped_and_no_line_is_padded(monkeypatch):
    from rich.table import Table

    out, con = _pipe_console(monkeypatch)
    assert con.width == 80 and not con.is_terminal
    sentence = " ".join(f"word{i}" for i in range(40))               # 279 characters
    con.print(sentence)
    con.print(Text(sentence, style="dim"))
    con.print("[bold]marked[/] up " + sentence)
    grid = render.fits_the_width(Table.grid(padding=(0, 2)))          # a teaching screen laid out for 80 columns
    grid.add_column()
    grid.add_column()
    grid.add_row("a", "b")
    grid.add_row("longer name", "c")
    con.print(grid)
    data = Table("n", "value")                                         # a table of data: its natural width
    data.add_row("1", "x" * 100)
    con.print(data)
    con.print("piece ", end="")                                        # not a line's end: the space stays
    con.print("continued")
    lines = out.getvalue().split("\n")
    assert lines[:3] == [sentence, sentence, "marked up " + sentence]
    assert lines[3:5] == ["a            b", "longer name  c"]
    assert max(len(line) for line in lines[5:-2]) == len("│ 1 │ " + "x" * 100 + " │") and "x" * 100 in out.getvalue()
    assert lines[-2] == "piece continued" and lines[-1] == ""
    assert not [line for line in lines if line.endswith(" ")]


def test_on_a_terminal_rich_wraps_as_usual():
    import io

    out = io.StringIO()
    con = render._Console(file=out, force_terminal=True, width=40, color_system=None, soft_wrap=False)
    con.print(" ".join(["word"] * 20))
    assert all(len(line) <= 40 for line in out.getvalue().splitlines()) and len(out.getvalue().splitlines()) == 3


def test_commands_in_a_pipe_keep_their_prose_whole_and_pad_no_line(tmp_path):
    """The real console script with stdout a pipe and COLUMNS=80 (the shipped model, from a
    folder without models/): every intro and note on one line however long, no line ending
    with a space."""
    import cli_helpers

    np.save(tmp_path / "x.npy", np.zeros((2, 28, 28), np.uint8))       # blank: doubtful answers, and the note on "?"
    whole = {
        ("inspect", "summary"): [r"^accuracy +train \S+ \(last epoch\), validation \S+ \(best epoch\), test \S+$",
                                 r"^train: measured during each epoch .* on the images as they are\.$"],
        ("inspect", "errors"): [r"^digitnet\.npz on the test split of .*: .* wrong .*; the \d+ most confident mistakes "
                                r"\(true → predicted, confidence, row\):$"],
        ("inspect", "weights"): [r"^digitnet\.npz, layer 1 \(.*\): .* slid over the image$",
                                 r"^Each picture: .* \(the ± by each number\)\.$"],
        ("predict", "x.npy"): [r"^\? = doubtful: 2 answers not to trust .* names each one's reason in its warning\.$"],
    }
    for args, patterns in whole.items():
        r = cli_helpers.run(args, cwd=tmp_path, COLUMNS=80)
        out = r.stdout.decode()
        assert r.returncode == 0, r.stderr
        lines = out.splitlines()
        assert not [line for line in lines if line.endswith(" ")], (args, out)
        for pattern in patterns:
            assert any(re.search(pattern, line) for line in lines), (args, pattern, out)
