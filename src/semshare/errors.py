"""User-facing errors: the CLI prints them as one line and exits non-zero, without a traceback."""

from __future__ import annotations

from pathlib import Path


def plain(text: object) -> str:
    """NumPy scalars as plain numbers: 'np.int64(57)' -> '57' (reprs of NumPy 2 scalars read badly to users)."""
    import re

    return re.sub(r"np\.(?:u?int|float|bool_?|str_)\d*\(([^()]*)\)", r"\1", str(text))


class SemshareError(Exception):
    """An error caused by the user's input (a file, a flag, a config), not by a bug in semshare."""


class DataFormatError(SemshareError):
    """A dataset file that does not follow docs/DATA.md.

    The message always names the file, the field, what was expected and what was found.
    """

    def __init__(self, path: str | Path, field: str, expected: str, found: str):
        self.path = str(path)
        self.field = field
        self.expected = plain(expected)
        self.found = plain(found)
        super().__init__(f"{self.path}: {field}: expected {self.expected}, found {self.found}")


class ConfigError(SemshareError):
    """An unknown config key, a value of the wrong type, or an unknown registry name."""


class OutputExistsError(SemshareError, FileExistsError):
    """An output folder that is already there and may not be replaced (no --overwrite)."""
