"""User-facing errors.

A :class:`SelfpickError` is a problem the user can fix (a bad file, a wrong flag, a full disk).
The CLI prints its message on one line, without a traceback, and exits with code 2.
Anything else escaping the library is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
from pathlib import Path

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


class SelfpickError(Exception):
    """An error caused by the user's input or environment.

    Parameters
    ----------
    message:
        What is wrong, in words a structural biologist understands.
    path:
        The file or folder concerned; it is put in front of the message.
    """

    def __init__(self, message: str, path: str | os.PathLike | None = None):
        self.message = message
        self.path = None if path is None else Path(path)
        super().__init__(str(self))

    def __str__(self) -> str:
        if self.path is None:
            return self.message
        return f"{self.path}: {self.message}"


class InputError(SelfpickError):
    """An input file (micrograph, coordinates, config, model) cannot be used."""


class ModelFileError(InputError):
    """A model file is not a selfpick model, is damaged, or comes from an incompatible version."""


class OutputError(SelfpickError):
    """An output cannot be written (permissions, full disk, existing experiment)."""
