"""User-facing errors: one clear paragraph, never a traceback."""

from __future__ import annotations


class BatchlabelError(Exception):
    """An error the user can fix (bad spec, missing file, refused resume...).

    The CLI prints ``str(error)`` as one paragraph and exits with status 2.
    """


class SpecError(BatchlabelError):
    """The job spec is invalid; the message names the field."""


class InputError(BatchlabelError):
    """The input corpus cannot be read or lacks required columns."""


class OutputError(BatchlabelError):
    """The output location cannot be written or holds an incompatible run."""
