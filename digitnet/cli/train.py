"""``digitnet train``: train a network and save it; ``digitnet evaluate`` lives beside it."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from digitnet.cli.common import EXIT_SIGNAL, Command, dump_json, error_line, handle_errors, parse_ints
from digitnet.modelpath import TRAIN_OUT

EXAMPLE = """
\b
Examples:
  digitnet train                     # the default preset, embedded digits
  digitnet train --preset 3b1b --out models/3b1b.npz
  digitnet train --layers conv32x5,pool2,conv64x5,pool2,dense256,dropout0.5
  digitnet train --data fashion-mnist --epochs 10 --json
"""
# the help of an option that takes a registered name: TrainCommand fills it in from the
# registries (_named_help) when the help is shown
NAMED = "(listed from the registries when the help is shown)"


def train_command(
    data: Optional[str] = typer.Option(None, "--data", "-d", metavar="SPEC", help=NAMED),
    preset: str = typer.Option("default", "--preset", "-p", metavar="NAME", help=NAMED),
    layers: Optional[str] = typer.Option(None, "--layers", metavar="SPEC", help="The hidden layers, e.g. conv32x5,pool2,dense256,dropout0.5 (tokens: denseN, convFxK[sS][pP|same], poolK, dropoutR, each dense/conv optionally :relu|tanh|sigmoid|linear); the output layer is added [preset]."),
    hidden: Optional[str] = typer.Option(None, "--hidden", metavar="SIZES", help="Shorthand for a dense stack: hidden layer sizes, e.g. 16,16 [preset]."),
    activation: Optional[str] = typer.Option(None, "--activation", help=NAMED),
    cost: Optional[str] = typer.Option(None, "--cost", help=NAMED),
    optimizer: Optional[str] = typer.Option(None, "--optimizer", help=NAMED),
    epochs: Optional[int] = typer.Option(None, "--epochs", "-e", metavar="N", help="Passes over the training data [preset]."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", "-b", metavar="N", help="Mini-batch size [preset]."),
    lr: Optional[float] = typer.Option(None, "--lr", metavar="ETA", help="Learning rate eta [preset]."),
    momentum: Optional[float] = typer.Option(None, "--momentum", metavar="X", help="Momentum in [0, 1) [preset]."),
    l2: Optional[float] = typer.Option(None, "--l2", metavar="X", help="L2 weight decay on weights [preset]."),
    schedule: Optional[str] = typer.Option(None, "--schedule", help=NAMED),
    seed: Optional[int] = typer.Option(None, "--seed", metavar="N", help="Seed for init, shuffles, split and augmentation [preset: 0]."),
    augment: Optional[bool] = typer.Option(None, "--augment/--no-augment", help="Random shifts, rotations, scalings, stroke widths per epoch [preset]."),
    val_split: Optional[float] = typer.Option(None, "--val-split", metavar="X", help="Share of the training split held out to pick the best epoch [preset]."),
    out: Path = typer.Option(TRAIN_OUT, "--out", "-o", metavar="FILE", help="Where to write the model."),
    force: bool = typer.Option(False, "--force", "-f", help="Overwrite --out if it exists."),
    resume: Optional[Path] = typer.Option(None, "--resume", metavar="MODEL", help="Continue training this model (its layers; options override its config)."),
    threads: str = typer.Option("auto", "--threads", metavar="auto|N",
                                help="Cores to use: auto moves between 1 and all as the machine's load changes; "
                                     "N pins them (same seed and N: bit-identical runs)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object at the end instead of tables."),
):
    """Train a network on a data set and save it as a model file."""
    from digitnet import training

    # SIGINT/SIGTERM become a flag for the whole command, not only the epochs: a signal while
    # the data loads stops before training; one during the last evaluation or the save still
    # ends in the saved model (then exit 130/143)
    try:
        with training.stop_signals() as stop:
            code = _train(stop, data, preset, layers, hidden, activation, cost, optimizer, epochs, batch_size, lr,
                          momentum, l2, schedule, seed, augment, val_split, out, force, resume, threads, as_json)
    except _Interrupted as e:
        error_line(str(e))
        code = EXIT_SIGNAL.get(e.signum, 130)
    if code:
        raise typer.Exit(code)


def _train(stop, data, preset, layers, hidden, activation, cost, optimizer, epochs, batch_size, lr, momentum, l2,
           schedule, seed, augment, val_split, out, force, resume, threads, as_json) -> int:
    """train_command's body, under its signal guard; returns the exit code."""
    from digitnet import modelfile, training
    from digitnet.atomic import same_file
    from digitnet.datasets import load_dataset
    from digitnet.errors import DigitnetError, UsageError
    from digitnet.metrics import evaluate
    from digitnet.nn.layers import MAX_UNITS
    from digitnet.render import make_console
    from digitnet.threads import parse as parse_threads

    threads = parse_threads(threads)           # "auto" → None
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
    in_place = resume is not None and out.exists() and same_file(resume, out)    # --resume X --out X
    if out.exists() and not force and not in_place:
        raise UsageError(f"{out} exists; pass --force to overwrite it or choose another --out")
    modelfile.check_output(out)          # before training, not after it
    replacing = _identity(out)           # what --out holds now (None: nothing)
    dataset = load_dataset(data)
    if previous is not None:
        previous.check_fits(dataset, data)     # --resume on other classes: refused, not relabelled
    if stop.signum is not None:
        raise _Interrupted(stop.signum, "interrupted before training started; nothing was written")

    err = make_console(stderr=True)
    with ProgressView(err, config.epochs, dataset.n_classes, config.augment, config.cost) as progress_view:
        result = training.train(dataset, config, resume=previous.network if previous else None, history=history,
                                threads=threads, on_chunk=progress_view.chunk, on_epoch=progress_view.epoch)
    model = training.model_from_result(result, dataset, config, data, {"preset": preset if resume is None else None})
    report = evaluate(model, *dataset.split("test")) if len(dataset.test_labels) else None
    if report:    # recorded, so `inspect summary` need not load the data again
        model.meta.update(test_accuracy=report["accuracy"], test_loss=report["loss"], test_n=report["n"])
    signum = result.signal if result.stopped == "interrupted" else stop.signum    # a signal after the epochs counts too

    # where the model goes: --out, unless that would lose something the user had
    target, note, conflict = out, None, None
    if signum is not None and replacing is not None:
        verdict = _compare_with_file(model, out, dataset, result)
        if verdict is not None:             # it did not beat the file it would replace: keep both
            target = _save_beside(model, out, "interrupted")
            note = f"the model so far {verdict}, which is kept; saved it as {target} instead"
    if note is None:
        may_replace = force or in_place
        if in_place and _identity(out) != replacing:       # someone else rewrote the file meanwhile
            may_replace = False
        try:
            modelfile.save_model(model, out, replace=may_replace)
        except FileExistsError:
            target = _save_beside(model, out, "new")
            conflict = (f"{out} was {'changed' if replacing else 'created'} by someone else while this run trained "
                        f"and is kept; this run's model is saved as {target}")

    best = next((h for h in result.history if h["epoch"] == result.best_epoch), {})   # the epoch that was saved
    summary = {
        "accuracy": report["accuracy"] if report else best.get("val_accuracy"),
        "test_accuracy": report["accuracy"] if report else None,
        "val_accuracy": best.get("val_accuracy"),
        "loss": report["loss"] if report else None,
        "epochs": len(result.history), "best_epoch": result.best_epoch,
        "seconds": round(result.seconds, 3), "samples_per_second": round(result.samples_per_second, 1),
        "stopped": "interrupted" if signum is not None else result.stopped, "out": str(target), "data": data,
        "config": config.to_json(),
        "threads": {"setting": threads or "auto", "seconds": {str(n): t for n, t in result.threads.items()}},
    }
    if as_json:
        dump_json(summary)
    else:
        from digitnet.cli.evaluate import render_report
        from digitnet.render import HISTORY_COLUMNS, fit_table, history_table

        con = make_console()
        con.print(fit_table(con, lambda k: history_table(result.history, result.best_epoch, compact=k),
                            len(HISTORY_COLUMNS) - 2))
        if report:
            render_report(con, report, model.class_names, title=f"Test split of {dataset.name} ({report['n']:,} images)")
        con.print(f"Saved {target}  (best epoch {result.best_epoch} of {len(result.history)}, "
                  f"{result.seconds:.1f} s, {result.samples_per_second:,.0f} samples/s, {_threads_used(threads, result)})",
                  soft_wrap=True, markup=False, highlight=False)
    if conflict:
        raise DigitnetError(conflict)
    if signum is not None:
        err.print(f"Interrupted: {note or f'saved the best model so far to {target}'}", soft_wrap=True, markup=False,
                  highlight=False)
        return EXIT_SIGNAL.get(signum, 130)
    return 0


def _threads_used(threads: int | None, result) -> str:
    """How the run used the cores: "2 threads", or for auto the share of time at each count."""
    if threads:
        return f"{threads} thread{'s' if threads > 1 else ''}"
    total = sum(result.threads.values()) or 1.0
    return "threads auto: " + ", ".join(f"{n} for {t / total:.0%}" for n, t in sorted(result.threads.items()))


class _Interrupted(Exception):
    """A signal before training: the command stops with nothing written."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum


def _identity(path: Path):
    """What is at ``path`` now, to notice a change: (device, inode, size, mtime) or None."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _compare_with_file(model, path: Path, dataset, result) -> str | None:
    """None when the interrupted run's ``model`` beats the model in ``path`` on the same
    held-out images (the run's validation rows, else the test split); otherwise how they
    compare, in words (also when ``path`` holds no model that fits this data)."""
    from digitnet.errors import DigitnetError
    from digitnet.metrics import loss_and_accuracy
    from digitnet.modelfile import load_model
    from digitnet.nn.functions import to_unit_float

    rows = result.val_indices
    images, labels = ((dataset.train_images[rows], dataset.train_labels[rows]) if len(rows)
                      else (dataset.test_images, dataset.test_labels))
    if not len(labels):
        return f"could not be compared with {path} (no held-out images)"
    x = to_unit_float(images).reshape(len(images), -1)
    new = loss_and_accuracy(model.network, x, labels)[1]
    try:
        old_model = load_model(path)
        old_model.check_fits(dataset)
    except DigitnetError:
        return f"({new:.2%} on held-out images) could not be compared with {path}"
    old = loss_and_accuracy(old_model.network, x, labels)[1]
    if new > old:
        return None
    return f"({new:.2%} on {len(labels):,} held-out images) did not beat {path} ({old:.2%})"


def _save_beside(model, out: Path, tag: str) -> Path:
    """Save ``model`` under a new name beside ``out`` (never replacing anything); its path."""
    from digitnet import modelfile
    from digitnet.atomic import sibling

    for _ in range(100):
        target = sibling(out, tag)
        try:
            return modelfile.save_model(model, target, replace=False)
        except FileExistsError:
            continue         # taken between the look and the save: the next name
    raise FileExistsError(f"{out}: no free name beside it")


class ProgressView:
    """Live progress on stderr, so the first seconds and the whole run are never a mystery.

    On a terminal: from the first moment a status line with a moving elapsed clock says what
    is happening ("starting: compiling the kernels (first run only)", "augmenting epoch 3"),
    then a bar for the current epoch (loss, accuracy) with the time left for the whole run;
    the line fits the terminal's width (render.StatusLine: the bar, the words and the other
    numbers give way, the clock is never cut). Each finished epoch leaves a line. In a pipe,
    only the lines. After an epoch whose cost rose sharply or whose accuracy sits at chance
    level, a hint about the learning rate (once each)."""

    def __init__(self, console, epochs: int, n_classes: int = 10, augment: bool = False, cost: str = "cross-entropy"):
        self.console, self.epochs, self.n_classes, self.augment, self.cost = console, epochs, n_classes, augment, cost
        self.progress = None
        self.task = None
        self.shown_epoch = None
        self.first_epoch = None          # the run's first epoch index (a resumed run does not start at 0)
        self.mark = None                 # (time, batches done in the run) at the first chunk: the ETA's clock
        self.losses: list[float] = []
        self.hinted: set[str] = set()

    def __enter__(self):
        if self.console.is_terminal:
            from rich.progress import Progress, ProgressColumn

            view = self

            class Status(ProgressColumn):         # the whole line, fitted to the width at each refresh
                def render(self, task):
                    return view.status(task)

            self.progress = Progress(Status(), console=self.console, transient=True)
            self.progress.__enter__()
            augmenting = ", augmenting" if self.augment else ""
            self.task = self.progress.add_task(f"starting: compiling the kernels (first run only){augmenting}", total=None,
                                               shorter=(f"compiling the kernels{augmenting}", "starting"), stats=(), eta="")
        return self

    def __exit__(self, *exc):
        if self.progress:
            self.progress.__exit__(*exc)

    # the order in which the status line's parts give way to a narrow terminal
    GIVE_WAY = ("bar", "bar", "what", "bar", "stats", "count", "what", "stats", "eta", "what")

    def status(self, task):
        """The status line of ``task``: what happens, a bar, batches done, loss and accuracy,
        the elapsed clock and the time left, as much of it as the width allows."""
        from datetime import timedelta

        from rich.progress_bar import ProgressBar

        from digitnet.render import StatusLine

        bars = [ProgressBar(total=task.total, completed=task.completed, width=w, pulse=not task.started,
                            animation_time=task.get_time()) for w in (40, 20, 10)]
        count = f"{int(task.completed):>{len(str(int(task.total)))}}/{int(task.total)}" if task.total else ""
        clock = str(timedelta(seconds=max(0, int(task.elapsed or 0))))
        return StatusLine([("what", (task.description, *task.fields["shorter"], "")), ("bar", (*bars, "")),
                           ("count", (count, "")), ("stats", (*task.fields["stats"], "")), ("clock", (clock,)),
                           ("eta", (task.fields["eta"], ""))], self.GIVE_WAY)

    def _run_fraction(self, epoch: int, done: int, total: int) -> float:
        return ((epoch - self.first_epoch) + done / max(total, 1)) / max(self.epochs, 1)

    def chunk(self, epoch, done, total, loss, acc):
        """Called every few thousand samples: move the bar and the time left for the run."""
        import time

        if self.first_epoch is None:
            self.first_epoch = epoch
        if not self.progress:
            return
        now, run_done = time.perf_counter(), self._run_fraction(epoch, done, total)
        if self.mark is None:
            self.mark = (now, run_done)
        eta = ""
        t0, f0 = self.mark
        if run_done > f0 and now > t0:
            left = (1 - run_done) * (now - t0) / (run_done - f0)
            eta = f"{int(left // 60)}:{int(left % 60):02d} left"
        if self.shown_epoch != epoch:
            k = epoch - self.first_epoch + 1
            self.progress.reset(self.task, total=total, completed=0, description=f"epoch {k:>3}/{self.epochs}",
                                shorter=(f"epoch {k}/{self.epochs}",), stats=(), eta=eta)
            self.shown_epoch = epoch
        self.progress.update(self.task, completed=done, stats=(f"loss {loss:.4f}  acc {acc:6.2%}", f"loss {loss:.4f}"),
                             eta=eta)

    def epoch(self, s):
        """Called after each epoch: one line that stays on the screen (and a hint when the
        learning rate looks wrong); the status says what comes next."""
        val = f"  val acc {s.val_accuracy:.2%}" if s.val_accuracy is not None else ""
        line = (f"epoch {s.epoch:>3}: loss {s.loss:.4f}  train acc {s.accuracy:.2%}{val}  "
                f"{s.seconds:.2f} s  {s.samples_per_second:,.0f} samples/s")
        out = self.progress.console if self.progress else self.console
        out.print(line, soft_wrap=True, markup=False, highlight=False)
        for hint in self._hints(s):
            out.print(f"hint: {hint}", soft_wrap=True, markup=False, highlight=False)
        if self.progress and self.first_epoch is not None and s.epoch - self.first_epoch < self.epochs:
            k = s.epoch - self.first_epoch + 1
            self.progress.update(self.task, description=("augmenting" if self.augment else "starting") + f" epoch {k}",
                                 shorter=(f"epoch {k}",))

    def _hints(self, s) -> list[str]:
        """What an epoch's numbers say about the learning rate (each said once). At chance
        level the cost tells the direction: far above the cost of a chance-level guess the
        network is saturated (the rate is too high); at that cost it has barely moved (too low)."""
        self.losses.append(s.loss)
        out = []
        chance = 1 / max(self.n_classes, 1)
        acc = s.val_accuracy if s.val_accuracy is not None else s.accuracy
        rose = len(self.losses) >= 2 and s.loss > 1.5 * min(self.losses[:-1])
        if rose and "diverging" not in self.hinted:
            self.hinted.add("diverging")
            out.append(f"the cost rose from {min(self.losses[:-1]):.4f} to {s.loss:.4f}: the learning rate "
                       f"(lr {s.lr:g}) looks too high; try --lr {s.lr / 10:g}")
        elif acc <= 1.5 * chance and "chance" not in self.hinted:
            self.hinted.add("chance")
            guess = chance_cost(self.cost, self.n_classes)
            head = (f"accuracy {acc:.1%} is chance level ({chance:.0%} for {self.n_classes} classes) and the cost "
                    f"{s.loss:.4f}")
            if s.loss > FAR_ABOVE_CHANCE * guess:
                out.append(f"{head} is far above a chance-level guess's ({guess:.4f}): the network is saturated, "
                           f"the learning rate (lr {s.lr:g}) looks too high; try --lr {s.lr / 10:g}")
            else:
                out.append(f"{head} is not far above a chance-level guess's ({guess:.4f}): the network has barely moved, "
                           f"the learning rate (lr {s.lr:g}) looks too low; try --lr {s.lr * 10:g}")
        return out


# a cost this many times a chance-level guess's says the rate is too high, not too low
FAR_ABOVE_CHANCE = 1.5


def chance_cost(cost: str, n_classes: int) -> float:
    """The cost of a chance-level guess: every class given 1/n_classes (the constant output
    with the least cost under either cost), as the cost's own formula counts it: ln n for
    cross-entropy, ½(1 − 1/n) for quadratic."""
    import numpy as np

    from digitnet.nn.functions import COSTS, one_hot

    n = max(n_classes, 1)
    a = np.full((1, n), 1.0 / n)
    return float(COSTS[cost].value(a, one_hot(np.array([0]), n, np.float64))[0])


def _named_help() -> dict[str, tuple[str, str]]:
    """(metavar, help) of each option that takes a registered name, read from the registries
    the library resolves the names with, so the help lists every name and alias there is.
    Called only when the help is shown: the registries import NumPy."""
    from digitnet.datasets import KNOWN
    from digitnet.nn.functions import COST_ALIASES, COSTS, HIDDEN_ACTIVATIONS
    from digitnet.nn.optim import OPTIMIZERS
    from digitnet.training import PRESETS, SCHEDULES

    twin = next((name for name, cfg in PRESETS.items() if name != "default" and cfg is PRESETS.get("default")), None)
    notes = {**PRESET_NOTES, **({"default": f"the {twin} preset"} if twin else {})}

    def preset(name: str) -> str:
        return f"{name} ({notes[name]})" if name in notes else name

    def cost(name: str) -> str:
        aliases = [alias for alias, to in COST_ALIASES.items() if to == name]
        also = f"also {', '.join(aliases)}; " if aliases else ""
        return f"{name} ({also}{COSTS[name].output} output)"

    return {
        "data": ("SPEC", f"Data set: {', '.join(KNOWN)}, a folder of IDX files, or an .npz [embedded; with "
                         "--resume, the model's]."),
        "preset": ("NAME", f"Starting point for every option: "
                           f"{', '.join(map(preset, sorted(PRESETS, key=lambda name: name != 'default')))}."),
        "activation": ("|".join(HIDDEN_ACTIVATIONS), "Hidden activation [preset]."),
        "cost": ("|".join(COSTS), f"{' or '.join(map(cost, COSTS))} [preset]."),
        "optimizer": ("|".join(OPTIMIZERS), "sgd (with --momentum) or adam (AdamW-style decay from --l2) [preset]."),
        "schedule": ("|".join(SCHEDULES), "Learning-rate schedule [preset]."),
    }


# what a preset's name does not say
PRESET_NOTES = {"3b1b": "784-16-16-10 sigmoid, the video's", "nielsen": "784-30-10, network.py"}


class TrainCommand(Command):
    """``train``'s command: its help lists the names the NAMED options take (_named_help)."""

    def format_help(self, ctx, formatter) -> None:
        """Fill in the NAMED options' metavars and help, then render as every command does."""
        named = _named_help()
        for p in self.params:
            if p.name in named:
                p.metavar, p.help = named[p.name]
        super().format_help(ctx, formatter)


def register(app: typer.Typer) -> None:
    """Add ``train`` to the app."""
    app.command("train", cls=TrainCommand,
                help="Train a network on a data set and save it as a model file.\n" + EXAMPLE)(handle_errors(train_command))
