"""``digitnet data`` (being built: issue 7)."""

import typer

app = typer.Typer(help="See, fetch and bring your own data sets.", no_args_is_help=True)
