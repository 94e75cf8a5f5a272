"""``digitnet predict`` (being built: issue 3)."""

import typer


def register(app: typer.Typer) -> None:
    """Add ``predict`` to the app (not yet)."""
