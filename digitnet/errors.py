"""digitnet's own error types: library code raises these, the CLI turns them into one line.

Exit codes (the CLI's contract): 0 success, 1 a failure in the data or the run,
2 usage, 130/143 interrupted by SIGINT/SIGTERM.
"""

from __future__ import annotations


class DigitnetError(Exception):
    """Base of every error digitnet raises on purpose; ``exit_code`` is what the CLI returns."""

    exit_code = 1


class DataError(DigitnetError):
    """A data file or data set is missing, malformed or inconsistent."""


class ModelError(DigitnetError):
    """A model file is missing, malformed, foreign or inconsistent."""


class UsageError(DigitnetError):
    """An option or combination of options that cannot work (exit 2)."""

    exit_code = 2


class TrainingError(DigitnetError):
    """Training could not go on (for example the loss became non-finite)."""


class DownloadError(DigitnetError):
    """A download failed on every mirror, or its checksum did not match."""
