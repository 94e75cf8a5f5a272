"""``digitnet data``: list, show, download and import data sets.

Thin: each command parses, calls ``digitnet.download`` / ``digitnet.importer`` /
``digitnet.datasets`` and renders. numpy, PIL and rich's progress load inside the commands;
numba never does.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from digitnet.cli.common import Command, dump_json, error_line, handle_errors, same_or_either

app = typer.Typer(help="See, fetch and bring your own data sets.", no_args_is_help=True,
                  context_settings={"help_option_names": ["-h", "--help"]})

MAX_WIDTH = 80
GAP = 2


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return ""


def _shorten(path: str) -> str:
    home = str(Path.home())
    return "~" + path[len(home):] if path.startswith(home + "/") else path


def list_command(as_json: bool = typer.Option(False, "--json", help="Print one JSON object.")):
    """The data sets digitnet knows and the ones you imported: present or not, where, size."""
    from rich.table import Table

    from digitnet.datasets import KNOWN, user_data_dir
    from digitnet.download import local_status
    from rich.text import Text

    from digitnet.importer import imported_sets
    from digitnet.render import cell, fit_table, make_console

    known = [local_status(name) for name in KNOWN]
    mine = imported_sets()
    if as_json:
        dump_json({"known": known, "imported": mine, "data_dir": str(user_data_dir())})
        return
    con = make_console()
    n = lambda v: "" if v is None else f"{v:,}"  # noqa: E731
    rows = []
    for s in known:
        where = _shorten(s["path"]) if s["present"] else ("digitnet data download " + s["name"] if s["downloadable"] else "")
        rows.append((s["name"], "yes" if s["present"] else "no", n(s["train"]), n(s["test"]),
                     _size(s["size"]) if s["present"] else "", where))
    for e in mine:             # names and paths of imports are the user's: data, never markup
        rows.append((e["name"], "yes" if e["present"] else "gone", n(e.get("train")), n(e.get("test")),
                     _size(e["size"]) if e["present"] else "", _shorten(e["path"])))

    def build(compact: int):
        # numbers never wrap; on a narrow terminal the size, then the test count go, and `where` folds
        cols = [c for c in ("name", "here", "train", "test", "size", "where")
                if not (compact >= 1 and c == "size") and not (compact >= 2 and c == "test")]
        table = Table(title="Data sets", title_justify="left", padding=(0, 1))
        for col in cols:
            numeric = col in ("train", "test", "size")
            table.add_column(col, justify="right" if numeric else "left", no_wrap=numeric,
                             overflow="fold")
        keep = [i for i, c in enumerate(("name", "here", "train", "test", "size", "where")) if c in cols]
        for r in rows:
            table.add_row(*(cell(r[i]) for i in keep))
        return table

    con.print(fit_table(con, build, 2))
    con.print(Text(f"Downloads go to {_shorten(str(user_data_dir()))}/NAME; imports are remembered in "
                   f"{_shorten(str(user_data_dir() / 'imported.json'))}."), soft_wrap=not con.is_terminal)


def _pick(labels, class_names, index: Optional[int], label: Optional[str], count: int):
    """Indices to show: ``count`` from ``index`` on, or the first ``count`` with ``label``."""
    import numpy as np

    from digitnet.errors import UsageError

    if count < 1:
        raise UsageError(f"--count must be at least 1, not {count}")
    n = len(labels)
    if index is not None and label is not None:
        raise UsageError("give --index or --label, not both")
    if label is not None:
        lookup = {name.lower(): i for i, name in enumerate(class_names)}
        wanted = lookup.get(label.lower())
        if wanted is None and label.isdigit() and int(label) < len(class_names):
            wanted = int(label)
        if wanted is None:
            raise UsageError(f"--label {label!r}: not a class of this data set (classes: {', '.join(class_names)})")
        found = np.flatnonzero(labels == wanted)
        if len(found) == 0:
            raise UsageError(f"--label {label!r}: no image of that class in this split")
        return found[:count]
    start = index or 0
    if not 0 <= start < n:
        raise UsageError(f"--index {start} is out of range: this split holds images 0 to {n - 1}")
    return np.arange(start, min(start + count, n))


def show_command(
    spec_arg: Optional[str] = typer.Argument(None, metavar="[SPEC]", show_default=False,
                                             help="Data set: a known name, a folder of IDX files, or an .npz "
                                                  "[default: embedded]."),
    spec: Optional[str] = typer.Option(None, "--data", "-d", metavar="SPEC", help="The data set (as SPEC)."),
    index: Optional[int] = typer.Option(None, "--index", "-i", metavar="N", help="First image to show (0-based)."),
    label: Optional[str] = typer.Option(None, "--label", "-l", metavar="CLASS", help="Show images of this class (number or name)."),
    count: int = typer.Option(6, "--count", "-n", metavar="N", help="How many images."),
    split: str = typer.Option("train", "--split", metavar="train|test", help="Which split."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object: the images chosen (pixels 0-255) and their labels."),
):
    """Render images of a data set in the terminal, with their labels."""
    from rich.table import Table
    from rich.text import Text

    from digitnet.datasets import load_dataset
    from digitnet.errors import UsageError
    from digitnet.render import digit, is_plain, make_console, terminal_safe

    if split not in ("train", "test"):
        raise UsageError(f"--split must be train or test, not {split!r}")
    spec = same_or_either("the data set (SPEC or --data)", spec_arg, spec) or "embedded"
    ds = load_dataset(spec)
    images, labels = ds.split(split)
    chosen = _pick(labels, ds.class_names, index, label, count)
    if as_json:
        dump_json({"data": spec, "name": ds.name, "split": split, "shape": list(images.shape[1:]),
                   "class_names": list(ds.class_names),
                   "images": [{"index": int(i), "label": int(labels[i]), "name": ds.class_names[int(labels[i])],
                               "pixels": images[i].tolist()} for i in chosen]})
        return
    con = make_console()
    width = min(con.width, MAX_WIDTH)
    cell_w = images.shape[2]
    per_row = max(1, (width + GAP) // (cell_w + GAP))
    con.print(Text(f"{terminal_safe(ds.name)}: {split} split, {len(labels):,} images of {images.shape[1]}×{images.shape[2]}, "
                   f"{ds.n_classes} classes; showing {len(chosen)}"), soft_wrap=True)
    grid = Table.grid(padding=(0, GAP, 1, 0))
    for _ in range(min(per_row, len(chosen))):
        grid.add_column(width=cell_w, no_wrap=True, overflow="crop")
    plain = is_plain(con)
    cells = []
    for i in chosen:
        lab = int(labels[i])
        name = terminal_safe(ds.class_names[lab])
        caption = f"#{i} {lab}" + (f" {name}" if name != str(lab) else "")
        text = Text(caption[:cell_w] + "\n", style="bold")
        text.append_text(digit(images[i], plain))
        cells.append(text)
    for r in range(0, len(cells), per_row):
        row = cells[r:r + per_row]
        grid.add_row(*row, *[""] * (min(per_row, len(chosen)) - len(row)))
    con.print(grid)


class _ConsoleReporter:
    """Download progress: a rich bar per file on a terminal, one line per file otherwise."""

    def __init__(self, console):
        self.console = console
        self.progress = None
        self.tasks = {}

    def __enter__(self):
        if self.console.is_terminal:
            from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                       TransferSpeedColumn)

            self.progress = Progress(TextColumn("{task.description:<28}"), BarColumn(), DownloadColumn(),
                                     TransferSpeedColumn(), TimeRemainingColumn(), console=self.console)
            self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        if self.progress:
            self.progress.__exit__(*exc)

    def start(self, name, url, total, done):
        if self.progress:
            if name in self.tasks:
                self.progress.update(self.tasks[name], total=total, completed=done)
            else:
                self.tasks[name] = self.progress.add_task(name, total=total, completed=done)
        else:
            resumed = f" (resuming at {done:,} bytes)" if done else ""
            self.console.print(f"fetching {url}{resumed}", soft_wrap=True, highlight=False)

    def advance(self, name, nbytes):
        if self.progress and name in self.tasks:
            self.progress.advance(self.tasks[name], nbytes)

    def finish(self, name, status):
        if status != "downloaded" or not self.progress:
            (self.progress.console if self.progress else self.console).print(f"{name}: {status}", soft_wrap=True)

    def warn(self, message):
        (self.progress.console if self.progress else self.console).print(f"warning: {message}", soft_wrap=True,
                                                                         highlight=False, markup=False)


class _Terminated(BaseException):
    """SIGTERM during a download (a BaseException, like KeyboardInterrupt: nothing catches it on the way)."""


def download_command(
    name: Optional[str] = typer.Argument(None, help="mnist, fashion-mnist or kmnist (or any name with --manifest)."),
    directory: Optional[Path] = typer.Option(None, "--dir", help="Where to put the files [default: the per-user data directory/NAME]."),
    mirror: Optional[List[str]] = typer.Option(None, "--mirror", help="Base URL to fetch from; repeat for fallbacks (replaces the built-in list)."),
    manifest: Optional[Path] = typer.Option(None, "--manifest", help="JSON file naming mirrors, files and their hashes (for private mirrors)."),
    deadline: float = typer.Option(3600.0, "--deadline", metavar="SECONDS", help="Give up on a file after this long, every mirror included."),
    min_rate: float = typer.Option(10_000.0, "--min-rate", metavar="BYTES/S", help="Give up on a mirror slower than this over a minute."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object at the end."),
):
    """Download a data set's official IDX files: mirrors, resume, checksums, atomic placement."""
    import signal

    from digitnet.datasets import KNOWN, find_idx_files, user_data_dir
    from digitnet.download import download, load_manifest, source_for
    from digitnet.errors import UsageError
    from digitnet.render import make_console

    if not deadline > 0:
        raise UsageError(f"--deadline must be a positive number of seconds, not {deadline}")
    if not min_rate >= 0:
        raise UsageError(f"--min-rate must be 0 or more bytes per second, not {min_rate}")

    if manifest is not None:
        source = load_manifest(manifest)
        name = name or source.name
    elif name is None:
        raise UsageError("name a data set to download (mnist, fashion-mnist, kmnist) or give --manifest")
    else:
        source = source_for(name)
    if "/" in name or name in ("", ".", ".."):
        raise UsageError(f"{name!r} is not a data set name")
    default = user_data_dir() / name
    target = directory or default

    def terminated(signum, frame):       # SIGTERM as Ctrl-C is: one line, the .part files kept
        raise _Terminated()

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        with _ConsoleReporter(make_console(stderr=True)) as reporter:
            results = download(source, target, mirror or None, reporter, deadline=deadline, min_rate=min_rate)
    except (KeyboardInterrupt, _Terminated) as e:
        error_line("interrupted; what arrived is kept in .part files: run the same command again to resume")
        raise typer.Exit(143 if isinstance(e, _Terminated) else 130) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    usable = find_idx_files(target) is not None
    spec = name if (target == default and name in KNOWN) else str(target)
    if as_json:
        dump_json({"name": name, "dir": str(target), "data": spec if usable else None,
                   "files": [{"name": r.name, "status": r.status, "url": r.url, "size": r.size} for r in results]})
        return
    con = make_console()
    fetched = [r for r in results if r.status == "downloaded"]
    con.print(f"{name}: {len(fetched)} file{'s' if len(fetched) != 1 else ''} downloaded, "
              f"{len(results) - len(fetched)} already present, all verified, in {target}", soft_wrap=True)
    if usable:
        con.print(f"Ready: digitnet train --data {spec}", soft_wrap=True, highlight=False)


def import_command(
    folder: Path = typer.Argument(..., help="A folder with one sub-folder of images per class (0/, 1/, … or any names)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="The .npz to write [default: the per-user data directory/imported/FOLDER.npz]."),
    test_split: float = typer.Option(0.0, "--test-split", help="Share of each class held out as the test split, e.g. 0.2."),
    seed: int = typer.Option(0, "--seed", help="Seed of the test split."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Leave out images that cannot be read or hold no digit (listed) instead of stopping."),
    force: bool = typer.Option(False, "--force", "-f", help="Overwrite --out if it exists."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
):
    """Turn a folder of your own images (a folder per class) into a data set."""
    from rich.table import Table

    from digitnet.importer import import_folder
    from digitnet.render import make_console

    err = make_console(stderr=True)
    if err.is_terminal:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        progress = Progress(TextColumn("preprocessing"), BarColumn(), MofNCompleteColumn(), console=err, transient=True)
        with progress:
            task = progress.add_task("import", total=None)
            result = import_folder(folder, out, test_split, seed, skip_bad, force,
                                   on_image=lambda done, total: progress.update(task, completed=done, total=total))
    else:
        result = import_folder(folder, out, test_split, seed, skip_bad, force)
    if as_json:
        dump_json(result.as_json())
        return
    con = make_console()
    for name, reason in result.skipped:
        err.print(f"skipped {name}: {reason}", soft_wrap=True, markup=False, highlight=False)
    table = Table(title=f"Imported {folder}", title_justify="left", padding=(0, 1))
    for col in ("label", "class", "train", "test"):
        table.add_column(col, justify="right")
    for i, name in enumerate(result.class_names):
        if result.train_counts[i] or result.test_counts[i]:
            table.add_row(str(i), name, str(result.train_counts[i]), str(result.test_counts[i]))
    con.print(table)
    con.print(f"Wrote {result.out}: {sum(result.train_counts)} train / {sum(result.test_counts)} test images, "
              f"{len(result.class_names)} classes"
              + (f", {len(result.skipped)} skipped" if result.skipped else ""), soft_wrap=True, highlight=False)
    con.print(f"Next: digitnet train --data {result.out}", soft_wrap=True, highlight=False)


EXAMPLES = {
    "list": "digitnet data list --json | jq '.known[] | select(.present) | .name'",
    "show": "digitnet data show fashion-mnist --label Sneaker --count 4 --split test",
    "download": "digitnet data download mnist && digitnet train --data mnist",
    "import": "digitnet data import my-digits/ --out my-digits.npz --test-split 0.2",
}
COMMANDS = {"list": list_command, "show": show_command, "download": download_command, "import": import_command}

for _name, _fn in COMMANDS.items():
    # "\b" keeps click from re-wrapping the example paragraph
    app.command(_name, cls=Command, help=f"{_fn.__doc__.strip()}\n\n\b\nExample:\n  {EXAMPLES[_name]}")(handle_errors(_fn))
