"""What every command shares: turning digitnet's errors into one line and an exit code,
consoles for stdout/stderr, and parsing helpers. Imports nothing heavy."""

from __future__ import annotations

import functools
import os
import sys

import typer

EXIT_FAILURE = 1
EXIT_SIGNAL = {2: 130, 15: 143}   # SIGINT, SIGTERM -> 128 + signum


def error_line(message: str) -> None:
    """Print one line on stderr, prefixed so a script's log shows who said it."""
    print(f"digitnet: error: {message}", file=sys.stderr, flush=True)


def handle_errors(fn):
    """Wrap a command: DigitnetError -> one line on stderr + its exit code; Ctrl-C -> 130;
    a closed pipe (``| head``) -> quiet exit; anything unexpected -> one line, exit 1
    (``DIGITNET_DEBUG=1`` re-raises it for the traceback)."""

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
            # the reader went away (e.g. `| head`): stop quietly, as Unix tools do
            try:
                sys.stdout = open(os.devnull, "w")
            except OSError:
                pass
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


def dump_json(obj) -> None:
    """One JSON object on stdout."""
    import json

    sys.stdout.write(json.dumps(obj, allow_nan=False) + "\n")
    sys.stdout.flush()
