"""What every command shares: turning digitnet's errors into one line and an exit code, the
default model (by the one rule, digitnet.modelpath), the options every command spells alike,
user text made safe for a terminal, and help without type noise. Imports nothing heavy.

The conventions (the same option means the same thing everywhere):

- ``--model/-m MODEL``: the model, in every command that uses one (a model given first as an
  argument, the older spelling, still works);
- ``--data/-d SPEC``: a data set; ``--json``: one JSON object (predict: one per line);
- ``-n N``: how many (``--count``, ``--samples``); ``-f``: ``--force`` where a file is written
  (``predict -f FORMAT`` from older scripts still works); ``-o``: ``--out``; ``-i``: ``--index``.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import typer
from typer import _click
from typer.core import TyperArgument, TyperCommand, TyperOption

from digitnet.modelpath import ENV, RULE, default_model  # noqa: F401  (the one rule, for the commands)
from digitnet.termtext import terminal_safe

EXIT_FAILURE = 1
EXIT_SIGNAL = {2: 130, 15: 143}   # SIGINT, SIGTERM -> 128 + signum
MODEL_HELP = f"The model file [default: {RULE}]."


def error_line(message: str) -> None:
    """Print one line on stderr, prefixed so a script's log shows who said it; names in it
    are printed as data (terminal_safe), so the line stays one line."""
    print(f"digitnet: error: {terminal_safe(message)}", file=sys.stderr, flush=True)


def warning_line(message: str) -> None:
    """One line on stderr for something worth knowing that does not stop the command."""
    print(f"digitnet: warning: {terminal_safe(message)}", file=sys.stderr, flush=True)


def handle_errors(fn):
    """Wrap a command: DigitnetError -> one line on stderr + its exit code; Ctrl-C -> 130;
    a closed pipe (``| head``) -> quiet exit 0, whatever the format; anything unexpected ->
    one line, exit 1 (``DIGITNET_DEBUG=1`` re-raises it for the traceback)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from digitnet.errors import DigitnetError

        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except DigitnetError as e:
            error_line(str(e))
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            error_line("interrupted")
            raise typer.Exit(130) from None
        except BrokenPipeError:
            closed_pipe()
            raise typer.Exit(0) from None
        except MemoryError:
            error_line("out of memory: try a smaller data set, --batch-size or network")
            raise typer.Exit(EXIT_FAILURE) from None
        except Exception as e:  # a bug: one line unless asked for the traceback
            if os.environ.get("DIGITNET_DEBUG"):
                raise
            error_line(f"internal error ({type(e).__name__}: {e}); rerun with DIGITNET_DEBUG=1 for the traceback")
            raise typer.Exit(EXIT_FAILURE) from None

    return wrapper


def closed_pipe() -> None:
    """The reader went away (``| head``): stop quietly, as Unix tools do. stdout is pointed
    at /dev/null so that flushing it at exit cannot fail a second time."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass


# ---------------------------------------------------------------------------------------------
# the model

def model_option(**kw):
    """``--model/-m MODEL``: the same option in every command."""
    return typer.Option(None, "--model", "-m", help=MODEL_HELP, metavar="MODEL", **kw)


def pick_model(*given: Path | str | None) -> Path:
    """The model named (as an argument or with --model; naming two different ones is a usage
    error), else default_model()."""
    from digitnet.errors import UsageError

    named = [Path(g) for g in given if g is not None]
    if len({str(p) for p in named}) > 1:
        raise UsageError(f"two models named: {named[0]} and {named[1]}; give one (--model MODEL)")
    return named[0] if named else default_model()


def load_model_for(*given: Path | str | None):
    """Load the model pick_model() chooses; when $DIGITNET_MODEL chose it and it cannot be
    loaded, the error says so (a variable set long ago is easy to forget)."""
    from digitnet.errors import ModelError
    from digitnet.modelfile import load_model

    path = pick_model(*given)
    try:
        return load_model(path)
    except ModelError as e:
        if all(g is None for g in given) and os.environ.get(ENV):
            raise ModelError(f"{e} (the model ${ENV} names)") from None
        raise


# ---------------------------------------------------------------------------------------------
# parsing helpers

def parse_ints(text: str, option: str, maximum: int | None = None) -> tuple[int, ...]:
    """'16,16' -> (16, 16); raises UsageError naming ``option`` on anything else, including a
    value above ``maximum``."""
    from digitnet.errors import UsageError

    parts = [p.strip() for p in text.split(",")]
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        raise UsageError(f"{option}: expected whole numbers separated by commas (e.g. 16,16), got {text!r}") from None
    if not values or min(values) < 1:
        raise UsageError(f"{option}: every layer needs at least 1 neuron, got {text!r}")
    if maximum is not None and max(values) > maximum:
        raise UsageError(f"{option}: at most {maximum:,} neurons per layer, got {text!r}")
    return values


def one_of(value: str, choices, option: str) -> str:
    """``value`` if it is one of ``choices``, else a UsageError that lists them."""
    from digitnet.errors import UsageError

    if value not in choices:
        raise UsageError(f"{option} must be one of {', '.join(choices)}, not {value!r}")
    return value


def same_or_either(option: str, *values):
    """The one value given among spellings of an option (e.g. ``--format`` and the older
    ``-f``), None if none; two different values are a usage error."""
    from digitnet.errors import UsageError

    given = [v for v in values if v is not None]
    if len(set(given)) > 1:
        raise UsageError(f"{option} given twice with different values: {', '.join(map(repr, given))}")
    return given[0] if given else None


def dump_json(obj) -> None:
    """One JSON object on stdout (non-ASCII escaped, so any name survives any locale)."""
    import json

    sys.stdout.write(json.dumps(obj, allow_nan=False) + "\n")
    sys.stdout.flush()


# ---------------------------------------------------------------------------------------------
# help without noise

class Command(TyperCommand):
    """A command whose help shows arguments by their metavar alone (``INPUT...``, ``[MODEL]``)
    instead of Typer's ``{INPUT...}...`` and ``<list[str]>``, and options that take a value
    and have no metavar by their name (``--data DATA``, ``--seed SEED``) instead of a type
    (``<str>``, ``<int>``, ``<path>``, ``<int range>``); options with choices give their
    metavar as ``a|b|c``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for p in self.params:
            if isinstance(p, TyperArgument):
                shown = p.metavar or p.name.upper()
                usage = shown if p.metavar else (f"[{shown}]" if not p.required else shown) + \
                    ("..." if p.nargs != 1 else "")
                p._usage_display_name = lambda usage=usage: usage             # noqa: SLF001
                p._rich_display_name = lambda shown=shown: shown             # noqa: SLF001
                p.display_type_rich = lambda ctx: None
            elif isinstance(p, TyperOption) and p.metavar is None and not p.is_flag and not p.count:
                kind = p.display_type(_click.Context(self))
                if kind.startswith("<") and kind.endswith(">"):
                    long = max(p.opts, key=len).lstrip("-")
                    p.metavar = long.upper().replace("-", "_")
