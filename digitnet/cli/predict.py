"""``digitnet predict``: recognise digits in images, directories, arrays, IDX and CSV files."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from digitnet.cli.common import EXIT_FAILURE, Command, error_line, handle_errors, load_model_for, model_option, \
    one_of, same_or_either

EXAMPLE = """
\b
Examples:
  digitnet predict my-digit.png          # a table: label, confidence, top 3
  digitnet predict photos/ --show        # with the steps to the 28×28
  digitnet predict t10k-images-idx3-ubyte.gz --format csv > labels.csv
  find . -name '*.jpg' | digitnet predict - --json --top-k 5
  digitnet predict - < my-digit.png      # image bytes on stdin
"""

FORMATS = ("table", "csv", "tsv", "jsonl")
TABLE_ROWS = 100   # rows per printed table, so a long run streams


def _top_text(row, digits: int = 0) -> str:
    return "  ".join(f"{label} {p:.{digits}%}" for label, p in row.top)


def _label_text(row, with_name: bool = True) -> str:
    return str(row.label) if not with_name or row.name == str(row.label) else f"{row.label} {row.name}"


# ---------------------------------------------------------------------------------------------
# csv / tsv / jsonl: one row per input, written and flushed as it comes

# The csv/tsv columns, in order, each a function of a Row (and top_k); --probs adds p0…pN
# after them. A new column is one more entry (scripts read the header, not positions; the
# first three have kept their places since the first version).
COLUMNS = {
    "input": lambda r: r.input,
    "label": lambda r: "" if r.error is not None else str(r.label),
    "confidence": lambda r: "" if r.error is not None else f"{r.confidence:.6f}",
    "index": lambda r: "" if r.index is None else str(r.index),
    "name": lambda r: "" if r.error is not None else r.name,
    "top": lambda r: " ".join(f"{label}:{p:.6f}" for label, p in r.top),       # "7:0.981234 9:0.012000 …"
    "error": lambda r: r.error or "",
    "warning": lambda r: r.warning or "",                                    # why the answer is doubtful
}


def _exact_names(stream, errors: str) -> None:
    """Let names that are not valid text (non-UTF-8 file names, kept by Python as surrogates)
    through: ``surrogateescape`` writes their original bytes (csv), ``backslashreplace``
    writes them as JSON's \\udcXX escapes (jsonl)."""
    reconfigure = getattr(stream, "reconfigure", None)
    if reconfigure is not None:
        try:
            reconfigure(errors=errors)
        except (ValueError, OSError):
            pass


def _write_delimited(rows, sep: str, probs: bool, n_classes: int) -> None:
    """csv/tsv: a header of COLUMNS (+ p0…pN with --probs), one line per row, flushed as it
    goes. An error row keeps its reason in ``error`` and leaves label, confidence, top empty."""
    import csv
    import sys

    _exact_names(sys.stdout, "surrogateescape")
    writer = csv.writer(sys.stdout, delimiter=sep, lineterminator="\n")
    writer.writerow([*COLUMNS, *([f"p{i}" for i in range(n_classes)] if probs else [])])
    sys.stdout.flush()
    for r in rows:
        extra = ([""] * n_classes if r.error is not None else [f"{p:.6f}" for p in r.probs]) if probs else []
        writer.writerow([fn(r) for fn in COLUMNS.values()] + extra)
        sys.stdout.flush()


def _write_jsonl(rows, probs: bool) -> None:
    """jsonl: {"input", "index", "label", "name", "confidence", "top": [[label, p], …],
    "warning"} (+ "probs"), or {"input", "index", "error"} for a failed input; "index" is the
    row of an array, IDX or CSV file, null for an image file; "warning" the reasons to doubt
    the answer, null when there are none."""
    import json
    import sys

    _exact_names(sys.stdout, "backslashreplace")
    for r in rows:
        if r.error is not None:
            obj = {"input": r.input, "index": r.index, "error": r.error}
        else:
            obj = {"input": r.input, "index": r.index, "label": r.label, "name": r.name,
                   "confidence": round(r.confidence, 6), "top": [[label, round(p, 6)] for label, p in r.top],
                   "warning": r.warning}
            if probs:
                obj["probs"] = [round(float(p), 6) for p in r.probs]
        sys.stdout.write(json.dumps(obj, ensure_ascii=False, allow_nan=False) + "\n")
        sys.stdout.flush()


# ---------------------------------------------------------------------------------------------
# the table

def _safe(text) -> str:
    from digitnet.termtext import terminal_safe

    return terminal_safe(text)


class _Layout:
    """Column widths of the predict table, fixed by its first rows so later tables line up.
    On a terminal a narrow width drops or shortens columns, in this order: the top-k column,
    the class names after the labels, the word "confidence"; the input's name is shortened
    from the left (its end is the informative part). Numbers are never cut. In a pipe
    nothing is dropped and names are never shortened."""

    def __init__(self, console, model, top_k: int, rows):
        self.terminal = console.is_terminal
        self.top_k = top_k
        self.top = True
        self.with_names = True
        self.conf_head = "confidence"
        self.name_w = max(5, max((len(_safe(r.entry)) for r in rows), default=5))
        names = [f"{i} {n}" if n != str(i) else n for i, n in enumerate(model.class_names)]
        self.label_w = max(5, max(len(n) for n in names))
        if not self.terminal:
            return
        need = lambda: (12 + self.rest())  # noqa: E731 — the input column at 12 characters at least
        if need() > console.width:
            self.top = False
        if need() > console.width:
            self.with_names, self.label_w = False, max(5, len(str(len(names) - 1)))
        if need() > console.width:
            self.conf_head = "conf"
        self.name_w = max(5, min(self.name_w, console.width - self.rest()))

    def conf_w(self) -> int:
        return max(len(self.conf_head), 7)                     # "100.0% ?"

    def top_w(self) -> int:
        return 9 * self.top_k - 2

    def rest(self) -> int:
        """Width of every column but the input's, with the one-space gaps."""
        w = self.label_w + 1 + self.conf_w() + 1
        w += (self.top_w() + 1) if self.top else 0
        return w

    def shorten(self, name: str) -> str:
        if not self.terminal:
            return name
        return name if len(name) <= self.name_w else "…" + name[-(self.name_w - 1):]


def _steps(console, row) -> None:
    """--show: under a row, why the answer is doubtful (if it is), then the preprocessing's
    steps (``row.steps``, kept as the image was prepared) tiled side by side, each under its
    title, ending with the 28×28 the network saw (alone for a row of an array: no steps)."""
    from rich.text import Text

    from digitnet.render import digit_grid, is_plain

    if row.warning:
        console.print(Text(f"? {row.warning}", style="yellow"))
    panels = [*(row.steps or ()), ("network saw", row.image)]
    console.print(digit_grid([a for _, a in panels], [t for t, _ in panels], is_plain(console), console.width))
    console.print()


def _print_tables(console, rows, model, top_k: int, per_table: int = TABLE_ROWS, show: bool = False) -> None:
    """Print rows as tables of ``per_table`` rows with fixed column widths (header on the
    first). ``show``: each row's preprocessing steps are drawn under it (``_steps``), and it
    is then a table of its own, with its header."""
    from rich.table import Table
    from rich.text import Text

    from digitnet.predict import LOW_CONFIDENCE
    from digitnet.render import is_plain, terminal_safe

    plain = is_plain(console)
    layout = None
    group: list = []
    first = True

    def emit():
        nonlocal first, layout
        if not group:
            return
        if layout is None:
            layout = _Layout(console, model, top_k, group)
        elif not layout.terminal:                               # a pipe: the column grows, never cuts
            layout.name_w = max(layout.name_w, max(len(terminal_safe(r.entry)) for r in group))
        # collapse_padding: one space between columns, as _Layout counts them
        table = Table(show_header=first or show, padding=(0, 1), collapse_padding=True, pad_edge=False,
                      box=None, show_edge=False)
        table.add_column("input", width=layout.name_w, no_wrap=True, overflow="ellipsis")
        table.add_column("label", width=layout.label_w, no_wrap=True)
        table.add_column(layout.conf_head, width=layout.conf_w(), justify="right", no_wrap=True)
        if layout.top:
            table.add_column(f"top {top_k}", **({"width": layout.top_w()} if layout.terminal else {}), no_wrap=True)
        for r in group:
            shown = Text(layout.shorten(terminal_safe(r.entry)))
            if r.error is not None:
                shown.stylize("red")
                why = Text(("ERROR " if plain else "") + terminal_safe(r.error), style="red")
                table.add_row(shown, Text("error", style="bold red"), "", *([why] if layout.top else []))
                continue
            conf = f"{r.confidence:.1%}" + (" ?" if r.warning else "")
            cells = [shown, Text(terminal_safe(_label_text(r, layout.with_names))),
                     Text(conf, style="yellow" if r.warning else "")]
            if layout.top:
                cells.append(_top_text(r))
            table.add_row(*cells)
        console.print(table)
        for r in group if show else ():
            if r.error is None:
                _steps(console, r)
        group.clear()
        first = False

    reasons: dict[str, int] = {}
    flagged = 0
    for row in rows:
        group.append(row)
        if row.warning:
            flagged += 1
            for why in row.warning.split("; "):
                reasons[why] = reasons.get(why, 0) + 1
        if len(group) >= per_table:
            emit()
    emit()
    if flagged:
        low = f"below {LOW_CONFIDENCE:.0%}"
        counts = ", ".join(f"{why}{f' ({low})' if why == 'low confidence' else ''}: {n}" for why, n in reasons.items())
        console.print(Text(f"? = doubtful: {flagged} answer{'s' if flagged != 1 else ''} not to trust ({counts}); "
                           "--format csv or jsonl names each one's reason in its warning."))


# ---------------------------------------------------------------------------------------------

def predict_command(
    inputs: List[str] = typer.Argument(..., metavar="INPUT...",
                                       help="Image files, folders, .npy, IDX or CSV files; - reads stdin: paths, one "
                                            "per line (each answered before the next is read), or one image's bytes."),
    model: Optional[Path] = model_option(),
    fmt: Optional[str] = typer.Option(None, "--format", metavar="table|csv|tsv|jsonl",
                                      help="Output: a table, or one row per input for scripts (streamed) "
                                           "[default: table; --json: jsonl]."),
    fmt_short: Optional[str] = typer.Option(None, "-f", hidden=True),            # the older spelling of --format
    as_json: bool = typer.Option(False, "--json", help="One JSON object per input (as --format jsonl)."),
    top_k: int = typer.Option(3, "--top-k", "-k", metavar="K", help="How many best guesses to list per input."),
    probs: bool = typer.Option(False, "--probs", help="Add every class's score (csv/tsv: p0…p9; jsonl: probs)."),
    no_preprocess: bool = typer.Option(False, "--no-preprocess",
                                       help="Feed images merely resized to 28×28 (no inversion, cropping or centring)."),
    show: bool = typer.Option(False, "--show", help="Under each prediction, draw the preprocessing's steps (for a "
                                                    "photo: the image, the paper removed, the marks kept) and the "
                                                    "28×28 the network saw (table only)."),
):
    """Predict the digit in each input."""
    from digitnet.errors import UsageError
    from digitnet.predict import predict_inputs
    from digitnet.render import make_console

    fmt = same_or_either("--format", fmt, fmt_short, "jsonl" if as_json else None) or "table"
    one_of(fmt, FORMATS, "--format")
    if show and fmt != "table":
        raise UsageError("--show draws the inputs in the table; it cannot be combined with --format " + fmt)
    m = load_model_for(model)
    failed = 0

    def rows():
        nonlocal failed
        for row in predict_inputs(m, inputs, preprocess=not no_preprocess, top_k=top_k, keep_probs=probs,
                                  keep_images=show, keep_steps=show):
            if row.error is not None:
                failed += 1
                error_line(f"{row.entry}: {row.error}")
            yield row

    if fmt == "table":
        # paths on stdin are answered one by one, as they come; with --show, each row has its steps under it
        _print_tables(make_console(), rows(), m, top_k, 1 if "-" in inputs or show else TABLE_ROWS, show)
    elif fmt == "jsonl":
        _write_jsonl(rows(), probs)
    else:
        _write_delimited(rows(), "," if fmt == "csv" else "\t", probs, len(m.class_names))
    if failed:
        raise typer.Exit(EXIT_FAILURE)


def register(app: typer.Typer) -> None:
    """Add ``predict`` to the app."""
    app.command("predict", cls=Command,
                help="Predict the digit in images, folders, arrays, IDX or CSV files.\n" + EXAMPLE)(
        handle_errors(predict_command))
