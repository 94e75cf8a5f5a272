"""``digitnet inspect`` (being built: issue 4)."""

import typer

app = typer.Typer(help="Look inside a trained network.", no_args_is_help=True)
