"""``digitnet draw``: a local web page to draw a digit and watch the network answer, layer by layer."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from digitnet.cli.common import Command, handle_errors, warning_line

EXAMPLE = """
\b
Examples:
  digitnet draw                                  # the shipped models and ./models/*.npz; opens the browser
  digitnet draw models/mnist-3b1b.npz my-net.npz --no-browser
  digitnet draw --port 0                         # any free port (the address is printed)
""" + """
The page's JSON API (POST /api/predict, GET /api/models) is described in the README.
"""


class _Terminated(BaseException):
    """SIGTERM, raised in the main thread so the server closes its socket on the way out.

    A BaseException, as KeyboardInterrupt is: the signal lands wherever the main thread is,
    and socketserver's loop turns any Exception raised while it hands a new connection to its
    thread into a call of ``handle_error`` (silent here) and serves on — a SIGTERM that
    arrived then was lost, and the server never exited."""


def draw_command(
    models: Optional[List[Path]] = typer.Argument(None, help="Model files to offer first (the shipped ones and "
                                                             "./models/*.npz are offered too).", metavar="[MODEL]..."),
    model: Optional[List[Path]] = typer.Option(None, "--model", "-m", metavar="MODEL",
                                               help="Another model to offer (repeatable). With none named, the page "
                                                    "starts on the default model: $DIGITNET_MODEL, else "
                                                    "./models/digitnet.npz if it exists, else the shipped one."),
    port: int = typer.Option(8784, "--port", "-p", help="Port to listen on (0: any free port).", min=0, max=65535,
                             metavar="N"),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on. Anything but a loopback address lets other "
                                                         "machines use the page (a warning is printed)."),
    no_browser: bool = typer.Option(False, "--no-browser", help="Do not open the page in the default browser."),
):
    """Serve the drawing page until Ctrl-C."""
    import signal

    from digitnet.serve.server import exposure_warning, serve

    def on_ready(server) -> None:
        ids = ", ".join(server.catalog.ids())
        print(f"digitnet draw: {server.url}  (models: {ids}; Ctrl-C to stop)", flush=True)
        if not no_browser:
            import threading
            import webbrowser

            threading.Thread(target=webbrowser.open, args=(server.url,), daemon=True).start()

    def on_term(signum, frame):
        raise _Terminated

    warning = exposure_warning(host)
    if warning:
        warning_line(warning)
    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        serve([*(models or ()), *(model or ())], host=host, port=port, on_ready=on_ready)
    except KeyboardInterrupt:
        print("digitnet: stopped (Ctrl-C)", file=sys.stderr, flush=True)
        raise typer.Exit(130) from None
    except _Terminated:
        print("digitnet: stopped (terminated)", file=sys.stderr, flush=True)
        raise typer.Exit(143) from None
    finally:
        signal.signal(signal.SIGTERM, previous)


def register(app: typer.Typer) -> None:
    """Add ``draw`` to the app."""
    app.command("draw", cls=Command, help="Draw a digit in the browser and watch the network light up, layer by layer.\n" + EXAMPLE)(
        handle_errors(draw_command))
