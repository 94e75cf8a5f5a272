"""Terminal rendering: digits, diverging weight heat maps, confusion matrices, bars and charts.

Two modes, chosen per console: colour (24-bit/256-colour cells, with "▀" half blocks so one
text line shows two pixel rows) and plain characters from the ramp `` .:-=+*#%@`` when the
console has no colour (``NO_COLOR``, a pipe, a dumb terminal). Functions return rich
renderables or plain strings; nothing here prints on its own.
"""

from __future__ import annotations

import os
import sys

import numpy as np
from rich.console import Console
from rich.table import Table
from rich.text import Text

RAMP = " .:-=+*#%@"
HALF = "▀"


def make_console(stderr: bool = False, width: int | None = None) -> Console:
    """A console for stdout (or stderr): colour only on a terminal without NO_COLOR."""
    stream = sys.stderr if stderr else sys.stdout
    no_color = bool(os.environ.get("NO_COLOR")) or not stream.isatty()
    return Console(file=stream, no_color=no_color, highlight=False, soft_wrap=False, width=width,
                   color_system=None if no_color else "auto", emoji=False)


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
    """Render a 2-D array: half blocks in colour, or one ramp character per pair of rows."""
    h, w = values.shape
    if h % 2:
        values = np.vstack([values, np.full((1, w), np.nan)])
    text = Text()
    for r in range(0, values.shape[0], 2):
        for c in range(w):
            top, bottom = values[r, c], values[r + 1, c]
            if plain:
                pair = [v for v in (top, bottom) if not np.isnan(v)]
                text.append(ramp_char(to_unit(float(np.mean(pair)))))
            else:
                bg = "black" if np.isnan(bottom) else color_of(float(bottom))
                text.append(HALF, style=f"{color_of(float(top))} on {bg}")
        if r + 2 < values.shape[0]:
            text.append("\n")
    return text


def digit(image: np.ndarray, plain: bool) -> Text:
    """A grey image (H, W), values in [0, 1] (or uint8), as W columns × H/2 lines."""
    img = np.asarray(image, np.float64)
    if img.max(initial=0) > 1.0:
        img = img / 255.0
    return _cells(img, _grey, plain, lambda v: v)


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


def confusion_table(cm: np.ndarray, class_names, plain: bool, title: str = "Confusion matrix (rows: true, columns: predicted)") -> Table:
    """The confusion matrix as a table; in colour each cell is shaded by its share of the row
    (green on the diagonal, red off it); in plain mode off-diagonal counts are marked '*'."""
    cm = np.asarray(cm)
    short = [n if len(n) <= 5 else n[:4] + "…" for n in class_names]
    table = Table(title=title, show_lines=False, pad_edge=False, padding=(0, 1), title_justify="left")
    table.add_column("true", justify="right", style="bold")
    for name in short:
        table.add_column(name, justify="right")
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
        table.add_row(name, *cells)
    return table


def history_table(history: list[dict], best_epoch: int | None = None) -> Table:
    """Per-epoch training history; the best epoch (by validation accuracy) is marked."""
    table = Table(title="Training", title_justify="left", padding=(0, 1))
    for col in ("epoch", "lr", "loss", "train acc", "val loss", "val acc", "seconds", "samples/s"):
        table.add_column(col, justify="right")
    shown = history if len(history) <= 12 else history[:3] + [None] + history[-8:]
    for h in shown:
        if h is None:
            table.add_row("…", *[""] * 7)
            continue
        mark = " *" if h["epoch"] == best_epoch else ""
        pct = lambda v: "—" if v is None else f"{v:.2%}"  # noqa: E731
        table.add_row(f"{h['epoch']}{mark}", f"{h['lr']:.3g}", f"{h['loss']:.4f}", pct(h["accuracy"]),
                      "—" if h["val_loss"] is None else f"{h['val_loss']:.4f}", pct(h["val_accuracy"]),
                      f"{h['seconds']:.2f}", f"{h['samples_per_second']:,.0f}")
    if best_epoch:
        table.caption = f"* best epoch (kept): {best_epoch}"
    return table


def per_class_table(per_class: list[dict]) -> Table:
    """Precision, recall, F1 and support per class."""
    table = Table(title="Per class", title_justify="left", padding=(0, 1))
    for col in ("class", "precision", "recall", "f1", "support"):
        table.add_column(col, justify="right")
    for row in per_class:
        name = row["name"] if row["name"] == str(row["label"]) else f"{row['label']} {row['name']}"
        table.add_row(name, f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}", str(row["support"]))
    return table
