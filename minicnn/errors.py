"""How every command ends on bad input: one line on stderr, exit code 2, never a traceback.

``@one_line_errors`` wraps a command's ``main``: a ValueError (the project's ConfigError, DataError,
FileFormatError are ValueErrors), an OSError (missing, unreadable or unwritable file, not a folder,
name too long, disk full) or a MemoryError (a budget of :mod:`minicnn.io`, or the machine) becomes
``error: <what>``. Errors that are the program's own fault still show their traceback.
"""

from __future__ import annotations

import functools
import sys

from .io import show_path

EXIT_BAD_INPUT = 2


def describe(exc: BaseException) -> str:
    """One line for a user-caused error: an OSError as ``<path>: <reason>``, others their message."""
    if isinstance(exc, OSError) and exc.strerror:
        names = [show_path(name) for name in (exc.filename, exc.filename2) if name is not None]
        text = f"{' -> '.join(names)}: {exc.strerror}" if names else exc.strerror
    elif isinstance(exc, MemoryError):
        text = str(exc) if str(exc).strip() else "out of memory"
        text = text if "budget" in text else f"out of memory: {text}"
    else:
        text = str(exc) or type(exc).__name__
    return text if isinstance(exc, ValueError) else " ".join(text.split())


def error(message: str) -> int:
    """Print ``error: message`` on stderr; return the exit code for bad input (2)."""
    print(f"error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def one_line_errors(main):
    """Decorate a command's ``main(argv)`` so that user-caused errors exit 2 with one line."""

    @functools.wraps(main)
    def wrapped(argv=None) -> int:
        try:
            return main(argv)
        except (ValueError, OSError, MemoryError) as exc:
            return error(describe(exc))

    return wrapped
