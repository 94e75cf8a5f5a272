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
