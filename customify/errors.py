"""How an exception reads in one line: in a log line, a health check, a task's history row.

One copy for the whole package (it imports nothing of customify, so any module may use it).
"""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def database_line(exc: BaseException) -> str:
    """`first_line` of the driver's own error when SQLAlchemy wraps one (`exc.orig`), else of `exc`."""
    return first_line(getattr(exc, "orig", None) or exc)


def described(exc: BaseException) -> str:
    """The exception's type and first line, at most 500 characters (a task's failure reason)."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"[:500]
