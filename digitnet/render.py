"""Rendering: digits, diverging weight heat maps, activations, confusion matrices, bars and
charts for the terminal, and the same pictures as RGB arrays for image files.

Two terminal modes, chosen per console: colour (24-bit/256-colour cells, with "▀" half blocks
so one text line shows two pixel rows) and plain characters from the ramp `` .:-=+*#%@`` when
the console has no colour (``NO_COLOR``, a pipe, a dumb terminal). Functions return rich
renderables, plain strings or arrays; nothing here prints or writes on its own.
"""

from __future__ import annotations

import os
import re
import sys

import numpy as np
from rich.box import HEAVY_HEAD, SIMPLE, Box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from digitnet.termtext import terminal_safe

RAMP = " .:-=+*#%@"
HALF = "▀"
# rich's SIMPLE box (a rule under the header and above the footer) in ASCII, for plain text
SIMPLE_ASCII = Box("    \n    \n -- \n    \n    \n -- \n    \n    \n")


def fits_the_width(table: Table) -> Table:
    """Mark a table laid out for the console's width (a teaching screen: `inspect` fits 80
    columns), so that in a pipe it keeps that layout (without the spaces that pad its lines)
    rather than being printed at its natural width."""
    table.fits_the_width = True
    return table


def _unwrapped(o) -> bool:
    return isinstance(o, Table) and not getattr(o, "fits_the_width", False)


# spaces at the end of a line (not of a piece printed with end="", which a later print continues)
_LINE_END_SPACES = re.compile(r" +(?=\n)")


class _Console(Console):
    """A rich Console that, when its output is not a terminal, prints text soft-wrapped (a
    line as long as it is, never broken at 80 columns), tables of data at their natural width
    (never wrapped or cut; see fits_the_width for the exception) and no line padded with
    trailing spaces. On a terminal it prints as rich does."""

    def on_broken_pipe(self) -> None:
        """The reader went away (``| head``): let the command's error handling end it quietly,
        with the same exit code whatever was being printed (rich's own choice is exit 1)."""
        self.quiet = True
        raise BrokenPipeError

    def print(self, *objects, **kwargs):
        """As rich's print on a terminal; in a pipe, plain lines (see the class)."""
        if self.is_terminal:
            return super().print(*objects, **kwargs)
        if self.quiet:
            return None
        if not any(_unwrapped(o) for o in objects):
            return self._write_lines(self._rendered(objects, kwargs))
        for o in objects:
            self._write_lines(self._rendered_unwrapped(o, kwargs) if _unwrapped(o) else self._rendered((o,), kwargs))
        return None

    def _rendered(self, objects, kwargs) -> str:
        """``objects`` as print would write them, with soft wrap."""
        with self.capture() as capture:
            super().print(*objects, **{**kwargs, "soft_wrap": True})
        return capture.get()

    def _rendered_unwrapped(self, table: Table, kwargs) -> str:
        """A table of data at its natural width, however wide."""
        kwargs = {k: v for k, v in kwargs.items() if k != "width"}
        width = max(natural_width(self, table), Text(str(table.title or "")).cell_len)
        saved = self._width
        self.width = max(width, 1)           # print(width=…) cannot go beyond the console's own width
        try:
            with self.capture() as capture:
                super().print(table, **kwargs)
        finally:
            self._width = saved
        return capture.get()

    def _write_lines(self, text: str) -> None:
        """Write ``text`` with the spaces that end its lines removed."""
        try:
            self.file.write(_LINE_END_SPACES.sub("", text))
            self.file.flush()
        except BrokenPipeError:
            self.on_broken_pipe()


def make_console(stderr: bool = False, width: int | None = None) -> Console:
    """A console for stdout (or stderr): colour only on a terminal without NO_COLOR; in a
    pipe, no line is wrapped at the width or padded with spaces (see _Console)."""
    stream = sys.stderr if stderr else sys.stdout
    no_color = bool(os.environ.get("NO_COLOR")) or not stream.isatty()
    return _Console(file=stream, no_color=no_color, highlight=False, soft_wrap=False, width=width,
                    color_system=None if no_color else "auto", emoji=False)


def natural_width(console: Console, renderable) -> int:
    """The width a renderable takes when nothing limits it (a table with no cell wrapped)."""
    return Measurement.get(console, console.options.update_width(1 << 16), renderable).maximum


FOLD_WIDTH = 12     # a column that may wrap (a path, a sentence) can be this narrow


def fits(console: Console, table: Table) -> bool:
    """True when ``table`` fits the console with every no-wrap column (numbers) whole; the
    columns allowed to wrap count at FOLD_WIDTH at most."""
    elastic = [(c, c.max_width) for c in table.columns if not c.no_wrap]
    for c, _ in elastic:
        c.max_width = min(c.max_width or FOLD_WIDTH, FOLD_WIDTH)
    try:
        return natural_width(console, table) <= console.width
    finally:
        for c, w in elastic:
            c.max_width = w


def fit_table(console: Console, build, steps: int) -> Table:
    """``build(k)`` for the smallest k in 0..steps whose table fits the terminal's width:
    step k drops or abbreviates one more column, so numbers are never cut ("1…"). In a pipe
    nothing is dropped (k = 0): the table is printed at its natural width."""
    if not console.is_terminal:
        return build(0)
    for k in range(steps + 1):
        table = build(k)
        if fits(console, table):
            return table
    return table


class StatusLine:
    """A one-line status that fits the width it is given: ``parts`` (name, alternatives) in
    display order, each alternative a string or a renderable with a fixed ``width`` (a bar),
    the first the fullest, "" to leave the part out. While the line is too wide, the next
    name in ``order`` moves its part on to its next alternative; a part not in ``order`` (the
    clock) is never shortened, and nothing shown is ever cut ("0:00:…")."""

    def __init__(self, parts, order):
        self.parts = [(name, list(alternatives)) for name, alternatives in parts]
        self.order = list(order)

    @staticmethod
    def _width(piece) -> int:
        return Text(piece).cell_len if isinstance(piece, str) else piece.width

    def _line_width(self, pieces) -> int:
        shown = [self._width(p) for p in pieces if p != ""]
        return sum(shown) + max(len(shown) - 1, 0)

    def layouts(self):
        """The pieces of each layout, fullest first: one more step of ``order`` each."""
        at = {name: 0 for name, _ in self.parts}
        yield [alternatives[0] for _, alternatives in self.parts]
        for name in self.order:
            alternatives = dict(self.parts)[name]
            at[name] = min(at[name] + 1, len(alternatives) - 1)
            yield [alternatives[at[n]] for n, alternatives in self.parts]

    def fitted(self, width: int) -> list:
        """The pieces of the fullest layout at most ``width`` columns wide (else the last)."""
        for pieces in self.layouts():
            if self._line_width(pieces) <= width:
                return pieces
        return pieces

    def __rich_measure__(self, console, options) -> Measurement:
        widths = [self._line_width(pieces) for pieces in self.layouts()]
        return Measurement(min(widths), max(widths))

    def __rich_console__(self, console, options):
        pieces = [p for p in self.fitted(options.max_width) if p != ""]
        grid = Table.grid(padding=(0, 1), expand=False)
        for p in pieces:
            grid.add_column(width=self._width(p), no_wrap=True)
        grid.add_row(*(Text(p) if isinstance(p, str) else p for p in pieces))
        yield grid


def cell(text) -> Text:
    """User text (a file, class or data-set name) as a table cell: never rich markup, never
    a control character."""
    return Text(terminal_safe(text))


def is_plain(console: Console) -> bool:
    """True when the console should get characters rather than colours."""
    return console.no_color or console.color_system is None


def _grey(v: float) -> str:
    g = int(round(255 * min(max(v, 0.0), 1.0)))
    return f"rgb({g},{g},{g})"


def _diverging(v: float) -> str:
    """v in [-1, 1] -> blue (negative) … black (0) … red (positive), as in the video."""
    v = min(max(v, -1.0), 1.0)
    k = int(round(255 * abs(v) ** 0.8))
    return f"rgb({k // 5},{k // 3},{k})" if v < 0 else f"rgb({k},{k // 5},{k // 6})"


def ramp_char(v: float) -> str:
    """A character for v in [0, 1] from the ramp ' .:-=+*#%@'."""
    return RAMP[int(round(min(max(v, 0.0), 1.0) * (len(RAMP) - 1)))]


def _cells(values: np.ndarray, color_of, plain: bool, to_unit) -> Text:
    """Render a 2-D array: half blocks in colour, or one ramp character per pair of rows.
    NaN cells are left blank (used to pad images with an odd height and ragged layouts)."""
    h, w = values.shape
    if h % 2:
        values = np.vstack([values, np.full((1, w), np.nan)])
    text = Text()
    for r in range(0, values.shape[0], 2):
        for c in range(w):
            top, bottom = float(values[r, c]), float(values[r + 1, c])
            if plain:
                pair = [v for v in (top, bottom) if not np.isnan(v)]
                text.append(ramp_char(to_unit(sum(pair) / len(pair))) if pair else " ")
            elif np.isnan(top) and np.isnan(bottom):
                text.append(" ")
            elif np.isnan(top):
                text.append("▄", style=color_of(bottom))
            else:
                bg = "default" if np.isnan(bottom) else color_of(bottom)
                text.append(HALF, style=f"{color_of(top)} on {bg}")
        if r + 2 < values.shape[0]:
            text.append("\n")
    return text


def digit(image: np.ndarray, plain: bool) -> Text:
    """A grey image (H, W), values in [0, 1] (or uint8), as W columns × H/2 lines."""
    img = np.asarray(image, np.float64)
    if img.max(initial=0) > 1.0:
        img = img / 255.0
    return _cells(img, _grey, plain, lambda v: v)


def shade(values: np.ndarray, plain: bool, vmax: float | None = None) -> Text:
    """A grey picture of a 2-D array: black 0 … white ``vmax`` (default: its max), values
    outside clipped; for activations, which unlike pixels need not stop at 1."""
    v = np.asarray(values, np.float64)
    vmax = vmax or float(v.max(initial=0)) or 1.0
    return _cells(v / vmax, _grey, plain, lambda u: u)


def heatmap(values: np.ndarray, plain: bool, scale: float | None = None) -> Text:
    """A diverging heat map of a 2-D array: blue negative, red positive (colour), or the
    ramp from ' ' (most negative) through '=' (zero) to '@' (most positive) in plain mode.
    ``scale`` is the magnitude drawn at full intensity (default: the array's max |value|)."""
    v = np.asarray(values, np.float64)
    s = scale or float(np.abs(v).max(initial=0)) or 1.0
    return _cells(v / s, _diverging, plain, lambda u: (u + 1) / 2)


def bar(fraction: float, width: int = 20, plain: bool = False) -> str:
    """A horizontal bar for a fraction in [0, 1]."""
    fraction = min(max(fraction, 0.0), 1.0)
    full = int(fraction * width)
    if plain:
        return "#" * full + "." * (width - full)
    parts = " ▏▎▍▌▋▊▉"
    rest = int((fraction * width - full) * 8)
    return ("█" * full + (parts[rest] if full < width else "")).ljust(width)


def sparkline(values, width: int = 40, plain: bool = False) -> str:
    """A one-line chart of a sequence (resampled to at most ``width`` points)."""
    v = np.asarray([x for x in values if x is not None], np.float64)
    if v.size == 0:
        return ""
    if v.size > width:
        v = v[np.linspace(0, v.size - 1, width).round().astype(int)]
    lo, hi = v.min(), v.max()
    ticks = "_.-=+*#@" if plain else "▁▂▃▄▅▆▇█"
    idx = np.zeros(v.size, int) if hi == lo else ((v - lo) / (hi - lo) * (len(ticks) - 1)).round().astype(int)
    return "".join(ticks[i] for i in idx)


def confusion_table(cm: np.ndarray, class_names, plain: bool, title: str = "Confusion matrix (rows: true, columns: predicted)",
                    compact: int = 0) -> Table:
    """The confusion matrix as a table; in colour each cell is shaded by its share of the row
    (green on the diagonal, red off it); in plain mode off-diagonal counts are marked '*'.
    ``compact`` 1 heads the columns by label number instead of (short) class name."""
    cm = np.asarray(cm)
    short = [terminal_safe(n if len(n) <= 5 else n[:4] + "…") for n in class_names]
    heads = [str(i) for i in range(len(cm))] if compact else short
    table = Table(title=title, show_lines=False, pad_edge=False, padding=(0, 1), title_justify="left")
    table.add_column("true", justify="right", style="bold", no_wrap=True)
    for name in heads:
        table.add_column(Text(name), justify="right", no_wrap=True)
    rows = cm.sum(axis=1, keepdims=True).clip(min=1)
    for i, name in enumerate(short):
        cells = []
        for j in range(len(cm)):
            count, share = int(cm[i, j]), cm[i, j] / rows[i, 0]
            if plain:
                cells.append(f"{count}{'*' if i != j and count else ' '}")
            elif count == 0:
                cells.append(Text("·", style="dim"))
            else:
                k = int(40 + 180 * share ** 0.5)
                color = f"rgb(0,{k},0)" if i == j else f"rgb({k},0,0)"
                cells.append(Text(str(count), style=f"bold white on {color}"))
        table.add_row(Text(f"{i} {name}" if compact and name != str(i) else name), *cells)
    return table


HISTORY_COLUMNS = ("epoch", "loss", "train acc", "val acc", "val loss", "lr", "seconds", "samples/s")


def history_table(history: list[dict], best_epoch: int | None = None, compact: int = 0) -> Table:
    """Per-epoch training history; the best epoch (by validation accuracy) is marked.
    ``compact`` k drops the last k columns of HISTORY_COLUMNS (samples/s first)."""
    columns = HISTORY_COLUMNS[:len(HISTORY_COLUMNS) - compact] if compact else HISTORY_COLUMNS
    table = Table(title="Training", title_justify="left", padding=(0, 1))
    for col in columns:
        table.add_column(col, justify="right", no_wrap=True)
    shown = history if len(history) <= 12 else history[:3] + [None] + history[-8:]
    pct = lambda v: "—" if v is None else f"{v:.2%}"  # noqa: E731
    for h in shown:
        if h is None:
            table.add_row("…", *[""] * (len(columns) - 1))
            continue
        mark = " *" if h["epoch"] == best_epoch else ""
        values = {"epoch": f"{h['epoch']}{mark}", "lr": f"{h['lr']:.3g}", "loss": f"{h['loss']:.4f}",
                  "train acc": pct(h["accuracy"]), "val loss": "—" if h["val_loss"] is None else f"{h['val_loss']:.4f}",
                  "val acc": pct(h["val_accuracy"]), "seconds": f"{h['seconds']:.2f}",
                  "samples/s": f"{h['samples_per_second']:,.0f}"}
        table.add_row(*(values[c] for c in columns))
    if best_epoch:
        table.caption = f"* best epoch (kept): {best_epoch}"
    return table


def per_class_table(per_class: list[dict], averages: dict | None = None, accuracy: float | None = None,
                    n: int | None = None, compact: int = 0) -> Table:
    """Precision, recall, F1 and support per class, as scikit-learn's classification_report
    lays them out: the classes, then accuracy, macro and weighted averages under a rule.
    Classes with no true and no predicted sample are left out (nothing to report on them).
    For narrow terminals ``compact`` 1 abbreviates the headers, 2 also draws no vertical
    rules and names classes and averages briefly, 3, 4, 5 drop the support, F1 and recall
    columns in turn; the numbers themselves are never cut."""
    heads = ("class", "precision", "recall", "f1", "support") if not compact else ("class", "prec", "rec", "f1", "n")
    heads = heads[:max(2, 5 - max(0, compact - 2))]
    table = Table(title="Per class", title_justify="left", padding=(0, 1), box=SIMPLE if compact >= 2 else HEAVY_HEAD,
                  show_edge=compact < 2, pad_edge=compact < 2)
    for col in heads:
        table.add_column(col, justify="right", no_wrap=True)

    def add(name, *values):
        table.add_row(name, *values[:len(heads) - 1])

    for row in per_class:
        if not row["support"] and not row.get("predicted", 1):
            continue
        name = str(row["label"]) if compact >= 2 or row["name"] == str(row["label"]) else f"{row['label']} {row['name']}"
        add(cell(name), f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}", f"{row['support']:,}")
    if averages:
        if table.rows:
            table.rows[-1].end_section = True
        if accuracy is not None:
            add("accuracy", "", "", f"{accuracy:.3f}", f"{n:,}" if n is not None else "")
        for key, label in (("macro_avg", "macro avg"), ("weighted_avg", "weighted avg")):
            a = averages[key]
            add(label.split()[0] if compact >= 2 else label, f"{a['precision']:.3f}", f"{a['recall']:.3f}",
                f"{a['f1']:.3f}", f"{a['support']:,}")
    return table


def shape_text(shape) -> str:
    """(6, 28, 28) -> '6×28×28'; (120,) -> '120'."""
    return "×".join(str(int(n)) for n in shape)


# the columns layer_table drops, in turn, for a narrow terminal (the layer's name says its type)
LAYER_TABLE_DROPS = ("type", "weights", "output shape")
LAYER_TABLE_STEPS = len(LAYER_TABLE_DROPS)


def layer_table(rows: list[dict], plain: bool, compact: int = 0) -> Table:
    """The layers as Keras' model.summary() lists them, from ``analysis.parameter_counts``
    rows: number, name, type, output shape per image, the arrays (``W2 16×6×5×5 + b2``, the
    weight layer's number as ``inspect weights --layer`` counts) and the parameter count,
    with the total in the footer. ``compact`` k drops the first k of LAYER_TABLE_DROPS, so
    that a narrow terminal (see fit_table) never gets a cut count."""
    total = sum(r["parameters"] for r in rows)
    dropped = LAYER_TABLE_DROPS[:compact]
    table = Table(box=SIMPLE_ASCII if plain else SIMPLE, show_edge=False, show_footer=True, padding=(0, 1),
                  pad_edge=False)
    columns = {"#": dict(justify="right", footer="", no_wrap=True), "layer": dict(footer="total", no_wrap=True),
               "type": dict(no_wrap=True), "output shape": dict(no_wrap=True), "weights": dict(overflow="fold"),
               "params": dict(justify="right", footer=f"{total:,}", no_wrap=True)}
    shown = [name for name in columns if name not in dropped]
    for name in shown:
        table.add_column(name, **columns[name])
    for r in rows:
        k = r["weight_layer"]
        if k:
            arrays = " + ".join(f"{name}{k} {shape_text(shape)}" if name == "W" else f"{name}{k}"
                                for name, shape in r["arrays"].items())
        else:               # a transformer block or read-out: its matrices, then what else it holds
            names = r["arrays"]
            arrays = " + ".join([f"{n} {shape_text(sh)}" for n, sh in names.items() if n.startswith("W_")]
                                + (["biases"] if any(n.startswith("b_") for n in names) else [])
                                + (["LayerNorm"] if any(n.endswith("gamma") for n in names) else []))
        cells = {"#": str(r["layer"]), "layer": r["name"], "type": r["type"], "output shape": shape_text(r["output_shape"]),
                 "weights": arrays, "params": f"{r['parameters']:,}"}
        table.add_row(*(Text(cells[name]) for name in shown), style=None if r["parameters"] else "dim")
    return table


# ---------------------------------------------------------------------------------------------
# Layout: blocks of text side by side

def tile(blocks, width: int, gap: int = 2) -> Text:
    """Place multi-line Text blocks left to right, starting a new row (after a blank line)
    whenever the next block would pass ``width`` columns. Blocks keep their own widths."""
    rows, row, used = [], [], 0
    for block in blocks:
        block = block if isinstance(block, Text) else Text(str(block))
        lines = list(block.split("\n", allow_blank=True))
        w = max((line.cell_len for line in lines), default=0)
        if row and used + gap + w > width:
            rows.append(row)
            row, used = [], 0
        used += (gap if row else 0) + w
        row.append((lines, w))
    if row:
        rows.append(row)
    out = Text()
    for i, row in enumerate(rows):
        if i:
            out.append("\n\n")
        height = max(len(lines) for lines, _ in row)
        for k in range(height):
            line = Text()
            for j, (lines, w) in enumerate(row):
                piece = lines[k].copy() if k < len(lines) else Text()
                if j < len(row) - 1:
                    piece.pad_right(w + gap - piece.cell_len)
                line.append_text(piece)
            line.rstrip()
            out.append_text(line)
            if k < height - 1:
                out.append("\n")
    return out


def labelled(label: str, body: Text, style: str = "bold", fit: bool = True) -> Text:
    """``body`` under a one-line ``label``, cut to the body's width when ``fit`` (else the
    label may make the block wider)."""
    w = max((line.cell_len for line in body.split("\n", allow_blank=True)), default=0)
    out = Text()
    out.append(label if not fit or len(label) <= max(w, 1) else label[:max(w - 1, 1)] + "…", style=style)
    out.append("\n")
    out.append_text(body)
    return out


# ---------------------------------------------------------------------------------------------
# Weights

def robust_scale(values: np.ndarray, q: float = 99.0) -> float:
    """The ``q``-th percentile of |values|: the magnitude drawn at full intensity, so one
    outlying weight does not wash out the rest (values beyond it saturate). 1.0 if all zero."""
    s = float(np.percentile(np.abs(values), q)) if np.size(values) else 0.0
    return s if s > 0 else (float(np.abs(values).max(initial=0)) or 1.0)


def pool_max_abs(values: np.ndarray, max_cols: int) -> tuple[np.ndarray, int]:
    """Shrink a matrix (rows, cols) to at most ``max_cols`` columns, each cell the value of
    largest magnitude (sign kept) in its block of k adjacent columns; returns (array, k)."""
    rows, cols = values.shape
    k = max(1, -(-cols // max(max_cols, 1)))
    if k == 1:
        return values, 1
    padded = np.zeros((rows, -(-cols // k) * k), values.dtype)
    padded[:, :cols] = values
    blocks = padded.reshape(rows, -1, k)
    pick = np.abs(blocks).argmax(axis=2)[..., None]
    return np.take_along_axis(blocks, pick, axis=2)[..., 0], k


def enlarge(images: np.ndarray, zoom: int) -> np.ndarray:
    """Repeat each pixel ``zoom`` times down and across (nearest neighbour): (…, H, W) -> (…, zH, zW).
    Zoom 2 draws a small filter with one character pair per weight, even in plain text."""
    return np.asarray(images).repeat(zoom, axis=-2).repeat(zoom, axis=-1)


def shrink2(images: np.ndarray, peak: bool = False) -> np.ndarray:
    """Average 2×2 pixel blocks: (…, H, W) -> (…, ceil(H/2), ceil(W/2)), for compact grids;
    with ``peak`` keep each block's largest value instead (2×2 max pooling: thin bright
    strokes of a feature map stay bright)."""
    h, w = images.shape[-2:]
    pad = [(0, 0)] * (images.ndim - 2) + [(0, h % 2), (0, w % 2)]
    x = np.pad(np.asarray(images, np.float64), pad, mode="edge")
    blocks = x.reshape(*x.shape[:-2], x.shape[-2] // 2, 2, x.shape[-1] // 2, 2)
    return blocks.max(axis=(-3, -1)) if peak else blocks.mean(axis=(-3, -1))


def heatmap_grid(maps: np.ndarray, labels, plain: bool, width: int, scales=None) -> Text:
    """Diverging heat maps (k, H, W) side by side in rows fitting ``width`` columns, each under
    its label; ``scales`` (k,) is each map's full-intensity magnitude (default: robust_scale)."""
    scales = [robust_scale(m) for m in maps] if scales is None else scales
    return tile([labelled(label, heatmap(m, plain, s)) for m, label, s in zip(maps, labels, scales)], width, gap=1)


def shade_grid(maps: np.ndarray, labels, plain: bool, width: int, vmax=None) -> Text:
    """Grey maps (k, H, W) side by side in rows fitting ``width`` columns, each under its
    label: black 0 … white ``vmax``, one number for all or one per map (default: each map's
    own largest value)."""
    vmax = [None] * len(maps) if vmax is None else np.broadcast_to(np.asarray(vmax, np.float64), (len(maps),))
    return tile([labelled(label, shade(m, plain, v)) for m, label, v in zip(maps, labels, vmax)], width, gap=1)


def filter_rows(filters: np.ndarray, row_labels, col_labels, plain: bool, scales, zoom: int = 2) -> Text:
    """A deeper conv layer's filters (n, C, k, k) as a table of heat maps: one row per filter,
    its C input channels left to right under ``col_labels``, each row on its own scale
    (``scales`` (n,)) so its channels compare; ``row_labels`` down the left; a blank line
    between rows."""
    lw = max(len(label) for label in row_labels) + 1
    cw = filters.shape[-1] * zoom
    out = Text(" " * (lw + 1) + " ".join(c[:cw].ljust(cw) for c in col_labels).rstrip(), style="bold")
    for i, (label, f, s) in enumerate(zip(row_labels, filters, scales)):
        out.append("\n\n" if i else "\n")
        row = tile([Text(label.ljust(lw), style="bold")] + [heatmap(enlarge(ch, zoom), plain, s) for ch in f],
                   width=10 ** 6, gap=1)
        out.append_text(row)
    return out


def digit_grid(images: np.ndarray, labels, plain: bool, width: int, styles=None) -> Text:
    """Grey images (k, H, W) side by side in rows fitting ``width`` columns, each under its label."""
    styles = styles or ["bold"] * len(images)
    return tile([labelled(label, digit(img, plain), style) for img, label, style in zip(images, labels, styles)], width, gap=2)


def diverging_rgb(values: np.ndarray) -> np.ndarray:
    """Values in [-1, 1] (any shape) -> uint8 RGB (…, 3): blue negative, black zero, red
    positive; the same colours as the terminal heat maps."""
    v = np.clip(np.nan_to_num(np.asarray(values, np.float64)), -1.0, 1.0)
    k = np.rint(255 * np.abs(v) ** 0.8).astype(np.int64)
    neg = np.stack([k // 5, k // 3, k], axis=-1)
    pos = np.stack([k, k // 5, k // 6], axis=-1)
    return np.where((v < 0)[..., None], neg, pos).astype(np.uint8)


def grey_rgb(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (any shape) -> uint8 RGB (…, 3) grey levels."""
    g = np.rint(255 * np.clip(np.asarray(values, np.float64), 0.0, 1.0)).astype(np.uint8)
    return np.repeat(g[..., None], 3, axis=-1)


INK = "o"          # plain text's mark for a digit's stroke under a tinted map


def attention_rgb(image: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """A grey image (…, H, W) in [0, 1] with weights (…, H, W) in [0, 1] tinted over it:
    black … red heat for the weight (the weight heat maps' red), the digit's strokes
    lightened on top; uint8 (…, H, W, 3). The terminal's tinted maps use these colours."""
    w = np.clip(np.nan_to_num(np.asarray(weights, np.float64)), 0.0, 1.0)
    k = 255 * w ** 0.8
    heat = np.stack([k, k / 5, k / 6], axis=-1)
    alpha = 0.6 * np.clip(np.asarray(image, np.float64), 0.0, 1.0)[..., None]
    return np.rint(heat * (1 - alpha) + 235 * alpha).astype(np.uint8)


def tinted(image: np.ndarray, weights: np.ndarray, plain: bool) -> Text:
    """Weights (H, W) in [0, 1] drawn over a grey image (H, W) in [0, 1]: in colour the
    attention_rgb colours as half blocks; in plain text the ramp for the weight, with
    INK where the digit has a stroke (either pixel of the pair at least ½)."""
    image, weights = np.asarray(image, np.float64), np.asarray(weights, np.float64)
    h, w = image.shape
    if not plain:
        rgb = attention_rgb(image, weights).reshape(-1, 3)
        styles = [f"rgb({r},{g},{b})" for r, g, b in rgb]
        return _cells(np.arange(h * w, dtype=np.float64).reshape(h, w), lambda i: styles[int(i)], False, None)
    lines = []
    for r in range(0, h, 2):
        ink, weight = image[r:r + 2].max(axis=0), weights[r:r + 2].mean(axis=0)
        lines.append("".join(INK if i >= 0.5 else ramp_char(v) for i, v in zip(ink, weight)))
    return Text("\n".join(lines))


def image_grid(tiles: np.ndarray, cols: int, zoom: int = 4, gap: int = 2, background=(128, 128, 128)) -> np.ndarray:
    """RGB tiles (k, h, w, 3) enlarged ``zoom`` times (nearest neighbour) in a grid of ``cols``
    columns, ``gap`` pixels apart: uint8 (rows·h·zoom + (rows−1)·gap, cols·w·zoom + (cols−1)·gap, 3)."""
    k, h, w, _ = tiles.shape
    cols = max(1, min(cols, k))
    rows = -(-k // cols)
    th, tw = h * zoom, w * zoom
    out = np.empty((rows * th + (rows - 1) * gap, cols * tw + (cols - 1) * gap, 3), np.uint8)
    out[...] = background
    big = tiles.repeat(zoom, axis=1).repeat(zoom, axis=2)
    for i in range(k):
        r, c = divmod(i, cols)
        out[r * (th + gap):r * (th + gap) + th, c * (tw + gap):c * (tw + gap) + tw] = big[i]
    return out


# ---------------------------------------------------------------------------------------------
# Activations and outputs

def activation_cells(values: np.ndarray, plain: bool, rows: int = 28, vmax: float | None = None,
                     cell_width: int = 1) -> Text:
    """One layer's activations (n,) as grey cells (black 0 … white ``vmax``), neurons filling
    columns of ``rows`` top to bottom: in colour two neurons share a text line (half blocks),
    in plain text each neuron is one ramp character, so the block is ``rows // 2`` lines high
    and about twice as wide. Each cell is ``cell_width`` characters wide."""
    v = np.asarray(values, np.float64).ravel()
    vmax = vmax or float(v.max(initial=0)) or 1.0
    per_col = max(1, rows // 2) if plain else max(2, rows)
    cols = -(-v.size // per_col)
    grid = np.full(cols * per_col, np.nan)
    grid[:v.size] = np.clip(v / vmax, 0.0, 1.0)
    grid = grid.reshape(cols, per_col).T                         # column-major: neuron i at (i % per_col, i // per_col)
    grid = np.repeat(grid, max(1, cell_width), axis=1)
    if plain:
        text = Text()
        for r in range(per_col):
            text.append("".join(" " if np.isnan(u) else ramp_char(u) for u in grid[r]).rstrip() or " ")
            if r < per_col - 1:
                text.append("\n")
        return text
    return _cells(grid, _grey, False, lambda u: u)


def output_bars(outputs: np.ndarray, class_names, plain: bool, width: int = 12, mark: int | None = None) -> Text:
    """Output activations (n,) one per line: class, bar, value; the winner (argmax, or ``mark``)
    highlighted in colour and marked '<' in plain text."""
    outputs = np.asarray(outputs, np.float64)
    winner = int(outputs.argmax()) if mark is None else mark
    names = [n if len(n) <= 6 else n[:5] + "…" for n in class_names]
    pad = max(len(n) for n in names)
    text = Text()
    for i, (name, v) in enumerate(zip(names, outputs)):
        line = f"{name:>{pad}} {bar(float(v), width, plain)} {v:6.1%}"
        if i == winner:
            text.append(line + (" <" if plain else " ◀"), style="bold green")
        else:
            text.append(line, style="dim" if v < 0.01 else "")
        if i < len(outputs) - 1:
            text.append("\n")
    return text


def count_bars(counts, class_names, plain: bool, width: int = 30) -> Text:
    """Counts per class as bars (longest = ``width``), with count and share on each line."""
    counts = np.asarray(counts, np.int64)
    total, top = max(int(counts.sum()), 1), max(int(counts.max(initial=0)), 1)
    names = [n if len(n) <= 8 else n[:7] + "…" for n in class_names]
    pad = max(len(n) for n in names)
    text = Text()
    for i, (name, c) in enumerate(zip(names, counts)):
        text.append(f"{name:>{pad}} {bar(c / top, width, plain)} {int(c):>6,} {c / total:6.1%}",
                    style="bold" if c == top else ("dim" if c == 0 else ""))
        if i < len(counts) - 1:
            text.append("\n")
    return text


# ---------------------------------------------------------------------------------------------
# Charts

SCALES = {
    # name: (position on the y axis, from a value; the values it can draw)
    "linear": (lambda v: v, lambda v: np.isfinite(v)),
    "log": (lambda v: np.log10(np.where(v > 0, v, np.nan)), lambda v: np.isfinite(v) & (v > 0)),
    # accuracies: by the error 1 - v on a log scale, so 98% → 99% is as tall as 80% → 90%
    "error-log": (lambda v: -np.log10(np.clip(1.0 - v, 1e-6, None)), lambda v: np.isfinite(v) & (v <= 1)),
}


def line_chart(series, plain: bool, height: int = 8, width: int = 60, fmt=lambda v: f"{v:.3f}", x_label: str = "epoch",
               scale: str = "linear", best: int | None = None, both: tuple[str, str] = ("◉", "@")) -> Text:
    """A small chart of one or more sequences sharing the y axis: ``series`` is a list of
    (name, values, colour, mark, plain_mark); None values are skipped. One column per point
    (two when there is room), resampled when there are more points than ``width``.

    ``scale`` is "linear", "log" (costs: every factor of ten as tall) or "error-log"
    (accuracies: by the log of 1 − v, so the last percent gets room); the axis labels give
    the values at the top, middle and bottom. Where two series meet in one cell the cell
    shows ``both`` (colour, plain) rather than whichever came last, and the legend says so.
    ``best`` (a 1-based point, e.g. the epoch kept) is marked under the x axis."""
    position, drawable = SCALES[scale]
    data = []
    for name, values, colour, mark, pmark in series:
        v = np.array([np.nan if x is None else float(x) for x in values], np.float64)
        v = np.where(drawable(v), v, np.nan)
        data.append((name, v, colour, mark, pmark))
    finite = np.concatenate([d[1][np.isfinite(d[1])] for d in data]) if data else np.zeros(0)
    if finite.size == 0:
        return Text("(no history)", style="dim")
    n = max(len(d[1]) for d in data)
    lo, hi = float(position(np.array(finite.min()))), float(position(np.array(finite.max())))
    if hi == lo:
        lo, hi = lo - 0.5, hi + 0.5
    if 2 * n - 1 <= width:                                     # room to space the points out
        cols, points = 2 * n - 1, [(2 * i, i) for i in range(n)]
    else:                                                          # one column per point, resampled to fit
        cols = min(width, n)
        points = [(c, int(round(c * (n - 1) / max(cols - 1, 1)))) for c in range(cols)]
    grid: list[list[tuple[str, str]]] = [[(" ", "")] * cols for _ in range(height)]
    owner: dict[tuple[int, int], int] = {}
    met = False
    for j, (name, v, colour, mark, pmark) in enumerate(data):
        y = position(v)
        for c, i in points:
            if i >= len(v) or not np.isfinite(y[i]):
                continue
            r = int(round((hi - y[i]) / (hi - lo) * (height - 1)))
            if owner.get((r, c), j) != j:                          # another series is already here
                grid[r][c] = (both[1] if plain else both[0], "" if plain else "bold")
                met = True
                continue
            owner[(r, c)] = j
            grid[r][c] = (pmark if plain else mark, "" if plain else colour)
    # labels: the values at the top, the middle and the bottom row (the inverse of the scale)
    top, bottom = float(finite.max()), float(finite.min())
    middle_pos = (hi + lo) / 2
    middle = {"linear": middle_pos, "log": 10 ** middle_pos, "error-log": 1 - 10 ** -middle_pos}[scale]
    labels = {0: fmt(top), height - 1: fmt(bottom)}
    if height >= 5:
        labels[(height - 1) // 2] = fmt(middle)
    gutter = max(len(s) for s in labels.values())
    text = Text()
    for r in range(height):
        label = labels.get(r, "")
        text.append(f"{label:>{gutter}} " + ("|" if plain else "┤" if label else "│"))
        for ch, style in grid[r]:
            text.append(ch, style=style)
        text.rstrip()
        text.append("\n")
    text.append(" " * gutter + " " + ("+" + "-" * cols if plain else "└" + "─" * cols) + "\n")
    first, last = "1", str(n)
    axis = f"{x_label} {first}".ljust(max(cols - len(last), len(x_label) + 3)) + last
    text.append(" " * (gutter + 2) + axis + "\n")
    if best is not None and 1 <= best <= n:
        c = min((c for c, i in points if i >= best - 1), default=cols - 1)
        note = f"^ best {x_label} {best}"
        at = gutter + 2 + c
        room = gutter + 2 + max(cols, len(axis), 30)
        text.append((" " * at + note) if at + len(note) <= room
                    else (" " * max(0, at - len(note) + 1) + f"best {x_label} {best} ^"), style="bold")
        text.append("\n")
    legend = Text(" " * (gutter + 2))
    for j, (name, _, colour, mark, pmark) in enumerate(data):
        legend.append(pmark if plain else mark, style="" if plain else colour)
        legend.append(f" {name}" + ("   " if j < len(data) - 1 or met else ""))
    if met:
        legend.append(both[1] if plain else both[0], style="" if plain else "bold")
        legend.append(" both")
    if scale != "linear":
        legend.append("   (log scale)" if scale == "log" else "   (scale: log of the error)", style="dim")
    text.append_text(legend)
    return text
