"""Errors a user can read: what went wrong, where, and how to fix it, in Spanish and English.

The CLI prints them as a table and the API renders them as OGC exception JSON, both from
the same object. They never carry internals (SQL, stack traces) nor victims' data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Problem:
    """One refused row or value: where it is and why, in words a non-programmer understands.

    ``row`` is the 1-based data row of the file (the header is row 0), or ``None`` when the
    problem concerns the whole file.
    """

    file: str
    row: int | None
    field: str
    value: str
    reason: str
    reason_es: str
    code: str = "invalid"

    def as_record(self) -> dict[str, Any]:
        """Plain dict for JSON reports."""
        return asdict(self)


@dataclass
class RutasError(Exception):
    """An error a user can act on.

    Parameters
    ----------
    message
        English text: what is wrong and how to fix it.
    message_es
        The same in Spanish.
    code
        A short stable identifier (``bad_file``, ``not_found``, ...), mapped to HTTP status
        by the API.
    problems
        Row-level details, when there are any.
    """

    message: str
    message_es: str = ""
    code: str = "invalid"
    problems: list[Problem] = field(default_factory=list)

    def __str__(self) -> str:
        if self.message_es:
            return f"{self.message_es} / {self.message}"
        return self.message


class InputError(RutasError):
    """The user's input (a file, an option, a request body) cannot be used as it is."""


class ConfigurationError(RutasError):
    """The installation is not set up as Rutas needs (database, data dir, binaries)."""
