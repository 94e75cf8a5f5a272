"""``digitnet evaluate``: accuracy, cost, per-class scores and the confusion matrix of a model."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from digitnet.cli.common import dump_json, handle_errors

EXAMPLE = """
\b
Examples:
  digitnet evaluate                                  # the default model on its own test split
  digitnet evaluate models/mnist-3b1b.npz --json | jq .accuracy
  digitnet evaluate my.npz --data fashion-mnist --split train
"""


def render_report(console, report: dict, class_names, title: str) -> None:
    """Print an evaluation report: accuracy and cost, per-class table, confusion heat map,
    the most-confused pairs."""
    from digitnet.render import confusion_table, is_plain, per_class_table

    console.print(f"[bold]{title}[/]: accuracy [bold]{report['accuracy']:.2%}[/]  "
                  f"({round(report['accuracy'] * report['n']):,}/{report['n']:,}), mean cost {report['loss']:.4f}")
    console.print(per_class_table(report["per_class"]))
    console.print(confusion_table(report["confusion_matrix"], class_names, is_plain(console)))
    pairs = report["most_confused"]
    if pairs:
        console.print("Most confused: " + "; ".join(
            f"{class_names[p['true']]} read as {class_names[p['predicted']]}: {p['count']} time{'s' if p['count'] != 1 else ''}"
            for p in pairs))


def evaluate_command(
    model: Optional[Path] = typer.Argument(None, help="Model file [default: $DIGITNET_MODEL or the shipped model]."),
    data: Optional[str] = typer.Option(None, "--data", "-d", help="Data set [default: the one the model was trained on]."),
    split: str = typer.Option("test", "--split", help="test or train."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
):
    """Evaluate a model on a data set split."""
    from digitnet.datasets import load_dataset
    from digitnet.errors import UsageError
    from digitnet.metrics import evaluate
    from digitnet.modelfile import default_model_path, load_model
    from digitnet.render import make_console

    if split not in ("test", "train"):
        raise UsageError(f"--split must be test or train, not {split!r}")
    m = load_model(model or default_model_path())
    spec = data or m.data_spec
    dataset = load_dataset(spec)
    if dataset.input_shape != m.input_shape or dataset.n_classes != len(m.class_names):
        raise UsageError(f"{spec}: {dataset.input_shape[0]}×{dataset.input_shape[1]} images in {dataset.n_classes} classes, "
                         f"but the model takes {m.input_shape[0]}×{m.input_shape[1]} in {len(m.class_names)}")
    report = evaluate(m, *dataset.split(split))
    if as_json:
        dump_json({"model": m.path, "data": spec, "split": split, **report})
    else:
        render_report(make_console(), report, m.class_names, f"{Path(m.path).name} on the {split} split of {dataset.name}")


def register(app: typer.Typer) -> None:
    """Add ``evaluate`` to the app."""
    app.command("evaluate", help="Evaluate a model: accuracy, cost, per-class scores, confusion matrix.\n" + EXAMPLE)(
        handle_errors(evaluate_command))
