"""``digitnet evaluate``: accuracy, cost, per-class scores and the confusion matrix of a model,
on a data set, a folder of class folders or a labelled CSV."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from digitnet.cli.common import EXIT_FAILURE, Command, dump_json, error_line, handle_errors, load_model_for, \
    model_option, one_of, warning_line

EXAMPLE = """
\b
Examples:
  digitnet evaluate                   # the default model, its own test split
  digitnet evaluate -m models/mnist-3b1b.npz --json | jq .accuracy
  digitnet evaluate --data my-digits/ --show   # a folder per class: 0/ 1/ …
  digitnet evaluate --data labelled.csv        # rows: label, then pixels
  digitnet evaluate --data fashion-mnist --split train -m my.npz
"""
SPLITS = ("test", "train")


def _line(console, text) -> None:
    """Print a line of prose: wrapped at words on a terminal, left whole in a pipe (never
    broken at 80 columns or padded with spaces, so a script's grep finds it)."""
    console.print(text, soft_wrap=not console.is_terminal)


def render_report(console, report: dict, class_names, title: str) -> None:
    """Print an evaluation report as scikit-learn's classification_report reads: the
    headline, per-class table with accuracy, macro and weighted averages under it, the
    confusion heat map, the most-confused pairs, and the accuracy again last (so it is on
    screen after the tables scroll by)."""
    from rich.text import Text

    from digitnet.render import confusion_table, fit_table, fits, is_plain, natural_width, per_class_table, terminal_safe

    plain = is_plain(console)
    headline = Text.assemble((terminal_safe(title), "bold"), ": accuracy ", (f"{report['accuracy']:.2%}", "bold"),
                             f"  ({round(report['accuracy'] * report['n']):,}/{report['n']:,}), mean cost {report['loss']:.4f}")
    _line(console, headline)
    averages = {k: report[k] for k in ("macro_avg", "weighted_avg") if k in report}
    console.print(fit_table(console, lambda k: per_class_table(report["per_class"], averages or None, report["accuracy"],
                                                               report["n"], compact=k), 5))
    matrix = fit_table(console, lambda k: confusion_table(report["confusion_matrix"], class_names, plain, compact=k), 1)
    if console.is_terminal and not fits(console, matrix):
        _line(console, Text(f"(the confusion matrix needs {natural_width(console, matrix)} columns; this terminal has "
                            f"{console.width}: widen it, or use --json)", style="dim"))
    else:
        console.print(matrix)
    pairs = report["most_confused"]
    if pairs:
        names = [terminal_safe(n) for n in class_names]
        _line(console, Text("Most confused: " + "; ".join(
            f"{names[p['true']]} read as {names[p['predicted']]}: {p['count']} time{'s' if p['count'] != 1 else ''}"
            for p in pairs)))
    _line(console, Text.assemble("accuracy ", (f"{report['accuracy']:.2%}", "bold"),
                                 f" ({round(report['accuracy'] * report['n']):,} of {report['n']:,} right)"))


def _render_mistakes(console, ev, class_names) -> None:
    """The most confidently wrong inputs, drawn as the network saw them."""
    import numpy as np
    from rich.text import Text

    from digitnet.render import digit_grid, is_plain, terminal_safe

    wrong = round((1 - ev.report["accuracy"]) * ev.report["n"])
    if not ev.mistakes:
        _line(console, Text("No mistakes to show."))
        return
    names = [terminal_safe(n) for n in class_names]
    k = len(ev.mistakes)
    which = (f"The {k} most confident of {wrong:,} mistakes" if k < wrong else
             "The one mistake" if k == 1 else f"All {k} mistakes, most confident first")
    _line(console, Text(f"{which} (true → predicted, confidence, input):", style="bold"))
    labels = [f"{names[m.true]}→{names[m.predicted]} {m.confidence:.0%}" for m in ev.mistakes]
    console.print(digit_grid(np.stack([m.image for m in ev.mistakes]), labels, is_plain(console), min(console.width, 100)))
    for i, m in enumerate(ev.mistakes):
        _line(console, Text(f"  {i + 1:>2}. {terminal_safe(m.entry)}: {names[m.true]} read as {names[m.predicted]} "
                            f"({m.confidence:.1%})"))


def evaluate_command(
    model_arg: Optional[Path] = typer.Argument(None, metavar="[MODEL]", help="The model (as --model; the older spelling)."),
    model: Optional[Path] = model_option(),
    data: Optional[str] = typer.Option(None, "--data", "-d", metavar="SPEC",
                                       help="What to evaluate on: a data set (a name, a folder of IDX files, an .npz), "
                                            "a folder with a folder of images per class (0/ 1/ … or class names), or a "
                                            "CSV whose rows are the label then the pixels [default: the model's own "
                                            "data set]."),
    split: str = typer.Option("test", "--split", metavar="test|train", help="Which split of a data set."),
    show: bool = typer.Option(False, "--show", help="Also draw the most confidently wrong inputs, as the network saw them."),
    count: int = typer.Option(12, "--count", "-n", min=1, metavar="N", help="How many wrong inputs --show draws."),
    no_preprocess: bool = typer.Option(False, "--no-preprocess",
                                       help="Images of a folder merely resized (as predict --no-preprocess)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
):
    """Evaluate a model on a data set split, a labelled folder or a labelled CSV."""
    from digitnet.evaluation import evaluate_on
    from digitnet.inputs import entry_name
    from digitnet.render import make_console

    one_of(split, SPLITS, "--split")
    m = load_model_for(model_arg, model)
    ev = evaluate_on(m, data, split, keep=count if show else 0, preprocess=not no_preprocess)
    for w in ev.warnings:
        warning_line(w)
    for source, index, why in ev.failures:
        error_line(f"{entry_name(source, index)}: {why}")
    if as_json:
        out = {"model": m.path, "data": ev.data, "kind": ev.kind, "split": split if ev.kind == "dataset" else None,
               **ev.report, "failed": [{"input": s, "index": i, "error": e} for s, i, e in ev.failures]}
        if show:
            out["mistakes"] = [{"input": x.input, "index": x.index, "true": x.true, "predicted": x.predicted,
                                "confidence": round(x.confidence, 6)} for x in ev.mistakes]
        dump_json(out)
    else:
        console = make_console()
        where = ev.description if ev.kind == "dataset" else f"{ev.data} ({ev.description})"
        render_report(console, ev.report, m.class_names, f"{Path(m.path).name} on {where}")
        if show:
            console.print()
            _render_mistakes(console, ev, m.class_names)
    if ev.failures:
        raise typer.Exit(EXIT_FAILURE)


def register(app: typer.Typer) -> None:
    """Add ``evaluate`` to the app."""
    app.command("evaluate", cls=Command,
                help="Evaluate a model: accuracy, cost, per-class precision/recall/F1 with macro and weighted "
                     "averages, confusion matrix; on a data set, a folder per class or a labelled CSV.\n" + EXAMPLE)(
        handle_errors(evaluate_command))
