"""Errors that reach the user as one line on stderr and exit code 2, and the helper that keeps
that line short."""

from __future__ import annotations

from typing import Any

BRIEF_CHARS = 60  # a value quoted in a message is cut to about this many characters


class UserError(Exception):
    """Bad usage or bad input: the message is the single line the user sees."""


class TrainingDiverged(Exception):
    """A training run whose loss stopped being finite: neither bad input nor a bug, so one line
    on stderr (the message) and exit code 1; the run folder keeps its last checkpoint."""


def brief(value: Any) -> str:
    """``repr(value)``, :func:`shortened`, so that a hostile input cannot flood a message."""
    try:
        return shortened(repr(value))
    except RecursionError:
        return f"a nested {type(value).__name__}"


def shortened(text: str) -> str:
    """``text`` on one line, cut to :data:`BRIEF_CHARS` characters with its full length noted."""
    text = " ".join(text.split("\n"))
    if len(text) <= BRIEF_CHARS:
        return text
    return f"{text[:BRIEF_CHARS]}... ({len(text)} characters)"
