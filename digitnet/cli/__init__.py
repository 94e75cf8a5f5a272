"""The ``digitnet`` command: a thin Typer layer over the library.

Each command parses its options, calls one library function and renders the result.
Command modules import numpy/numba/PIL inside their functions, so ``--help`` stays instant.
"""

from __future__ import annotations

try:
    import typer

    from digitnet import __version__
    from digitnet.cli import data, draw, evaluate, inspect, predict, train
except KeyboardInterrupt:          # Ctrl-C while the commands load: one line, not a traceback
    import sys

    print("digitnet: error: interrupted", file=sys.stderr, flush=True)
    raise SystemExit(130) from None

app = typer.Typer(
    name="digitnet",
    help="Train and inspect handwritten-digit classifiers: the 3Blue1Brown network, made real.\n\n"
         "Start with:  digitnet train   then   digitnet predict my-digit.png",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool):
    if value:
        print(f"digitnet {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")):
    """Train and inspect handwritten-digit classifiers."""


train.register(app)
evaluate.register(app)
predict.register(app)
draw.register(app)
app.add_typer(inspect.app, name="inspect")
app.add_typer(data.app, name="data")


def main() -> None:
    """Console-script entry point: like ``app()``, but a usage error that the option parser
    itself finds (``--epochs ten``, a missing argument) is one line on stderr, exit 2, as
    every other error is."""
    import sys

    from digitnet.cli.common import error_line

    try:
        code = app(standalone_mode=False)
    except KeyboardInterrupt:
        error_line("interrupted")
        sys.exit(130)
    except typer.Abort:
        error_line("aborted")
        sys.exit(1)
    except Exception as e:
        # the parser's UsageError/ClickException: they carry a message and an exit code
        if not (hasattr(e, "format_message") and hasattr(e, "exit_code")):
            raise
        if type(e).__name__ == "NoArgsIsHelpError":     # bare `digitnet inspect`: show the help
            print(e.format_message())
            sys.exit(0)
        ctx = getattr(e, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        error_line(" ".join(e.format_message().split()) + hint)
        sys.exit(e.exit_code)
    sys.exit(code if isinstance(code, int) else 0)
