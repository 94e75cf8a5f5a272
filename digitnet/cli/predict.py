"""``digitnet predict``: recognise digits in images, directories, arrays, IDX and CSV files."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from digitnet.cli.common import EXIT_FAILURE, error_line, handle_errors

EXAMPLE = """
\b
Examples:
  digitnet predict my-digit.png                      # a table: label, confidence, top 3
  digitnet predict photos/ --show                    # every image in a folder, with what the network saw
  digitnet predict t10k-images-idx3-ubyte.gz --format csv > labels.csv
  find . -name '*.jpg' | digitnet predict - --format jsonl --top-k 5
"""

FORMATS = ("table", "csv", "tsv", "jsonl")
TABLE_ROWS = 100   # rows per printed table, so a long run streams


def _fmt_top(row) -> str:
    return "  ".join(f"{label} {p:.0%}" for label, p in row.top)


def _label_text(row) -> str:
    return str(row.label) if row.name == str(row.label) else f"{row.label} {row.name}"


def _print_tables(console, rows, model, show: bool, top_k: int) -> None:
    """Print rows as tables of TABLE_ROWS rows with fixed column widths (header on the first)."""
    from rich.table import Table
    from rich.text import Text

    from digitnet.render import digit, is_plain

    plain = is_plain(console)
    group, first = [], True
    name_width = None

    def emit():
        nonlocal first, name_width
        if not group:
            return
        label_width = max(6, max(len(n) for n in model.class_names) + 3)
        top_width = max(5, 9 * top_k)
        if name_width is None:  # fixed by the first group, so later groups line up under it
            rest = label_width + 10 + top_width + (29 if show else 0) + 5
            name_width = max(5, min(60, max(len(r.input) for r in group), console.width - rest))
        table = Table(show_header=first, padding=(0, 1), pad_edge=False, box=None, show_edge=False)
        table.add_column("input", width=name_width, no_wrap=True, overflow="ellipsis")
        if show:
            table.add_column("network saw", width=28, no_wrap=True)
        table.add_column("label", width=label_width, no_wrap=True)
        table.add_column("confidence", width=10, justify="right", no_wrap=True)
        table.add_column(f"top {top_k}", width=top_width, no_wrap=True)
        for r in group:
            shown = r.input if len(r.input) <= name_width else "…" + r.input[-(name_width - 1):]
            seen = [digit(r.image, plain)] if show and r.image is not None else ([""] if show else [])
            if r.error is not None:
                table.add_row(Text(shown, style="red"), *seen, Text("error", style="bold red"), "",
                              Text(("ERROR " if plain else "") + r.error, style="red"))
                continue
            conf = f"{r.confidence:.1%}" + (" ?" if r.low_confidence else "")
            table.add_row(shown, *seen, _label_text(r), Text(conf, style="yellow" if r.low_confidence else ""),
                          _fmt_top(r))
        console.print(table)
        group.clear()
        first = False

    flagged = 0
    for row in rows:
        group.append(row)
        flagged += row.low_confidence
        if len(group) >= TABLE_ROWS:
            emit()
    emit()
    if flagged:
        console.print(f"? = low confidence (below {_low():.0%}): {flagged} answer{'s' if flagged != 1 else ''} "
                      "the network is unsure of; it is often confidently wrong on non-digits, too.")


def _low() -> float:
    from digitnet.predict import LOW_CONFIDENCE

    return LOW_CONFIDENCE


def _write_delimited(rows, sep: str, probs: bool, n_classes: int) -> None:
    """csv/tsv: header input,label,confidence (+ p0…pN), one line per row, flushed as it goes.
    An error row has an empty label and confidence."""
    import csv
    import sys

    writer = csv.writer(sys.stdout, delimiter=sep, lineterminator="\n")
    writer.writerow(["input", "label", "confidence"] + ([f"p{i}" for i in range(n_classes)] if probs else []))
    for r in rows:
        if r.error is not None:
            writer.writerow([r.input, "", ""] + ([""] * n_classes if probs else []))
        else:
            writer.writerow([r.input, r.label, f"{r.confidence:.6f}"] + ([f"{p:.6f}" for p in r.probs] if probs else []))
        sys.stdout.flush()


def _write_jsonl(rows, probs: bool) -> None:
    """jsonl: {"input", "label", "name", "confidence", "top": [[label, p], …]} (+ "probs"),
    or {"input", "error"} for a failed input."""
    import json
    import sys

    for r in rows:
        if r.error is not None:
            obj = {"input": r.input, "error": r.error}
        else:
            obj = {"input": r.input, "label": r.label, "name": r.name, "confidence": round(r.confidence, 6),
                   "top": [[label, round(p, 6)] for label, p in r.top]}
            if probs:
                obj["probs"] = [round(float(p), 6) for p in r.probs]
        sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
        sys.stdout.flush()


def predict_command(
    inputs: List[str] = typer.Argument(..., help="Image files, directories, - (paths on stdin), .npy, IDX or CSV files.",
                                       metavar="INPUT..."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="Model file [default: $DIGITNET_MODEL or the shipped model]."),
    fmt: str = typer.Option("table", "--format", "-f", help="table, csv, tsv or jsonl (one row per input, streamed)."),
    top_k: int = typer.Option(3, "--top-k", "-k", help="How many best guesses to list per input."),
    probs: bool = typer.Option(False, "--probs", help="Add every class's score (csv/tsv: p0…p9; jsonl: probs)."),
    no_preprocess: bool = typer.Option(False, "--no-preprocess",
                                       help="Feed images merely resized to 28×28 (no inversion, cropping or centring)."),
    show: bool = typer.Option(False, "--show", help="Draw the 28×28 input the network saw beside each prediction (table only)."),
):
    """Predict the digit in each input."""
    from digitnet.errors import UsageError
    from digitnet.modelfile import default_model_path, load_model
    from digitnet.predict import predict_inputs
    from digitnet.render import make_console

    if fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if show and fmt != "table":
        raise UsageError("--show draws the inputs in the table; it cannot be combined with --format " + fmt)
    m = load_model(model or default_model_path())
    failed = 0

    def rows():
        nonlocal failed
        for row in predict_inputs(m, inputs, preprocess=not no_preprocess, top_k=top_k, keep_probs=probs,
                                  keep_images=show):
            if row.error is not None:
                failed += 1
                error_line(f"{row.input}: {row.error}")
            yield row

    if fmt == "table":
        _print_tables(make_console(), rows(), m, show, top_k)
    elif fmt == "jsonl":
        _write_jsonl(rows(), probs)
    else:
        _write_delimited(rows(), "," if fmt == "csv" else "\t", probs, len(m.class_names))
    if failed:
        raise typer.Exit(EXIT_FAILURE)


def register(app: typer.Typer) -> None:
    """Add ``predict`` to the app."""
    app.command("predict", help="Predict the digit in images, folders, arrays, IDX or CSV files.\n" + EXAMPLE)(
        handle_errors(predict_command))
