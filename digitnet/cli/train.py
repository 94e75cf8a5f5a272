"""``digitnet train``: train a network and save it; ``digitnet evaluate`` lives beside it."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from digitnet.cli.common import EXIT_SIGNAL, dump_json, handle_errors, parse_ints

EXAMPLE = """
\b
Examples:
  digitnet train                                   # the default preset on the embedded digits
  digitnet train --preset 3b1b --out models/3b1b.npz
  digitnet train --layers conv32x5,pool2,conv64x5,pool2,dense256,dropout0.5
  digitnet train --data fashion-mnist --epochs 10 --json
"""


def train_command(
    data: Optional[str] = typer.Option(None, "--data", "-d", help="Data set: embedded, mnist, fashion-mnist, kmnist, a folder of IDX files, or an .npz [embedded; with --resume, the model's]."),
    preset: str = typer.Option("default", "--preset", "-p", help="Starting point for every option: default, cnn, lenet, mlp, 3b1b (784-16-16-10 sigmoid, the video's), nielsen (784-30-10, network.py)."),
    layers: Optional[str] = typer.Option(None, "--layers", help="The hidden layers, e.g. conv32x5,pool2,dense256,dropout0.5 (tokens: denseN, convFxK[sS][pP|same], poolK, dropoutR, each dense/conv optionally :relu|tanh|sigmoid|linear); the output layer is added [preset]."),
    hidden: Optional[str] = typer.Option(None, "--hidden", help="Shorthand for a dense stack: hidden layer sizes, e.g. 16,16 [preset]."),
    activation: Optional[str] = typer.Option(None, "--activation", help="Hidden activation: sigmoid, relu, tanh [preset]."),
    cost: Optional[str] = typer.Option(None, "--cost", help="quadratic (alias mse; sigmoid output) or cross-entropy (alias log-loss; softmax output) [preset]."),
    optimizer: Optional[str] = typer.Option(None, "--optimizer", help="sgd (with --momentum) or adam (AdamW-style decay from --l2) [preset]."),
    epochs: Optional[int] = typer.Option(None, "--epochs", "-e", help="Passes over the training data [preset]."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", "-b", help="Mini-batch size [preset]."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Learning rate eta [preset]."),
    momentum: Optional[float] = typer.Option(None, "--momentum", help="Momentum in [0, 1) [preset]."),
    l2: Optional[float] = typer.Option(None, "--l2", help="L2 weight decay on weights [preset]."),
    schedule: Optional[str] = typer.Option(None, "--schedule", help="Learning-rate schedule: constant, step, cosine [preset]."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed for init, shuffles, split and augmentation [preset: 0]."),
    augment: Optional[bool] = typer.Option(None, "--augment/--no-augment", help="Random shifts, rotations, scalings, stroke widths per epoch [preset]."),
    val_split: Optional[float] = typer.Option(None, "--val-split", help="Share of the training split held out to pick the best epoch [preset]."),
    out: Path = typer.Option(Path("models/digitnet.npz"), "--out", "-o", help="Where to write the model."),
    force: bool = typer.Option(False, "--force", "-f", help="Overwrite --out if it exists."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue training this model (its layers; options override its config)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="BLAS threads (default: all cores).", min=1),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object at the end instead of tables."),
):
    """Train a network on a data set and save it as a model file."""
    from digitnet import modelfile, training
    from digitnet.datasets import load_dataset
    from digitnet.errors import UsageError
    from digitnet.metrics import evaluate
    from digitnet.nn.layers import MAX_UNITS
    from digitnet.render import make_console

    overrides = dict(hidden=parse_ints(hidden, "--hidden", MAX_UNITS) if hidden is not None else None,
                     layers=layers, activation=activation, cost=cost, optimizer=optimizer,
                     epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum, l2=l2, schedule=schedule,
                     seed=seed, augment=augment, val_split=val_split)
    previous, history = None, None
    if resume is not None:
        previous = modelfile.load_model(resume)
        config = training.resume_config(previous, **overrides)
        history = previous.history
    else:
        config = training.resolve_config(preset, **overrides)
    data = training.data_for(previous, data)
    # the options first, then where the result goes, then the data: all before any training
    if out.is_dir():
        raise UsageError(f"--out {out} is a directory; give a file name such as {out / 'digitnet.npz'}")
    if out.exists() and not force and (resume is None or resume.resolve() != out.resolve()):
        raise UsageError(f"{out} exists; pass --force to overwrite it or choose another --out")
    modelfile.check_output(out)          # before training, not after it
    dataset = load_dataset(data)

    err = make_console(stderr=True)
    with ProgressView(err, config.epochs) as progress_view:
        result = training.train(dataset, config, resume=previous.network if previous else None, history=history,
                                threads=threads, on_chunk=progress_view.chunk, on_epoch=progress_view.epoch)
    model = training.model_from_result(result, dataset, config, data, {"preset": preset if resume is None else None})
    report = evaluate(model, *dataset.split("test")) if len(dataset.test_labels) else None
    if report:    # recorded, so `inspect summary` need not load the data again
        model.meta.update(test_accuracy=report["accuracy"], test_loss=report["loss"], test_n=report["n"])
    modelfile.save_model(model, out)
    best = next((h for h in result.history if h["epoch"] == result.best_epoch), {})   # the epoch that was saved
    summary = {
        "accuracy": report["accuracy"] if report else best.get("val_accuracy"),
        "test_accuracy": report["accuracy"] if report else None,
        "val_accuracy": best.get("val_accuracy"),
        "loss": report["loss"] if report else None,
        "epochs": len(result.history), "best_epoch": result.best_epoch,
        "seconds": round(result.seconds, 3), "samples_per_second": round(result.samples_per_second, 1),
        "stopped": result.stopped, "out": str(out), "data": data, "config": config.to_json(),
    }
    if as_json:
        dump_json(summary)
    else:
        from digitnet.cli.evaluate import render_report
        from digitnet.render import history_table

        con = make_console()
        con.print(history_table(result.history, result.best_epoch))
        if report:
            render_report(con, report, model.class_names, title=f"Test split of {dataset.name} ({report['n']:,} images)")
        con.print(f"Saved {out}  (best epoch {result.best_epoch} of {len(result.history)}, "
                  f"{result.seconds:.1f} s, {result.samples_per_second:,.0f} samples/s)")
    if result.stopped == "interrupted":
        err.print(f"Interrupted: saved the best model so far to {out}")
        raise typer.Exit(EXIT_SIGNAL.get(result.signal, 130))


class ProgressView:
    """Live progress on stderr: a rich bar for the current epoch on a terminal (loss, accuracy,
    samples/s), a line per finished epoch; on a pipe only the lines."""

    def __init__(self, console, epochs: int):
        self.console, self.epochs = console, epochs
        self.progress = None
        self.task = None
        self.shown_epoch = None

    def __enter__(self):
        if self.console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(TextColumn("epoch {task.fields[epoch]:>3}/{task.fields[of]}"), BarColumn(),
                                     MofNCompleteColumn(), TextColumn("loss {task.fields[loss]:.4f}  acc {task.fields[acc]:6.2%}"),
                                     TimeElapsedColumn(), console=self.console, transient=True)
            self.progress.__enter__()
            self.task = self.progress.add_task("train", total=None, epoch=1, of=self.epochs, loss=0.0, acc=0.0)
        return self

    def __exit__(self, *exc):
        if self.progress:
            self.progress.__exit__(*exc)

    def chunk(self, epoch, done, total, loss, acc):
        """Called every few thousand samples: move the bar."""
        if not self.progress:
            return
        if self.shown_epoch != epoch:
            # reset() replaces the custom fields, so it is given all of them
            self.progress.reset(self.task, total=total, completed=0, epoch=epoch + 1, of=self.epochs, loss=loss, acc=acc)
            self.shown_epoch = epoch
        self.progress.update(self.task, completed=done, loss=loss, acc=acc)

    def epoch(self, s):
        """Called after each epoch: one line that stays on the screen."""
        val = f"  val acc {s.val_accuracy:.2%}" if s.val_accuracy is not None else ""
        line = (f"epoch {s.epoch:>3}: loss {s.loss:.4f}  train acc {s.accuracy:.2%}{val}  "
                f"{s.seconds:.2f} s  {s.samples_per_second:,.0f} samples/s")
        (self.progress.console if self.progress else self.console).print(line, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add ``train`` to the app."""
    app.command("train", help="Train a network on a data set and save it as a model file.\n" + EXAMPLE)(handle_errors(train_command))
