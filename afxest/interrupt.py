"""The one path for SIGINT and SIGTERM: both raise :class:`Interrupted` (a BaseException, so
every ``except BaseException`` clean-up runs, and no ``except Exception`` swallows it), and the
command line exits with 128 + the signal's number (130, 143) and one line. :func:`deferred`
holds a signal back while a result set is being published, so that a publish is never cut in
half."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)

_held = 0  # depth of deferred() blocks
_pending: int | None = None  # a signal that arrived inside one


class Interrupted(BaseException):
    """The process received SIGINT or SIGTERM."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """128 + the signal's number."""
        return 128 + self.signum


def _handler(signum: int, _frame: FrameType | None) -> None:
    """Raises :class:`Interrupted`, or keeps the signal for later inside a :func:`deferred` block."""
    global _pending
    if _held:
        _pending = signum
        return
    raise Interrupted(signum)


def install() -> dict[int, Any]:
    """Routes SIGINT and SIGTERM to :class:`Interrupted`; returns the previous handlers (for
    :func:`restore`). Only the main thread may install handlers: elsewhere nothing changes."""
    previous = {}
    try:
        for signum in SIGNALS:
            previous[signum] = signal.signal(signum, _handler)
    except ValueError:  # not the main thread
        pass
    return previous


def restore(previous: dict[int, Any]) -> None:
    """Puts back the handlers :func:`install` replaced."""
    for signum, handler in previous.items():
        signal.signal(signum, handler)


@contextmanager
def deferred() -> Iterator[None]:
    """Holds SIGINT and SIGTERM until the block ends (then raise :class:`Interrupted`)."""
    global _held, _pending
    _held += 1
    try:
        yield
    finally:
        _held -= 1
        if not _held and _pending is not None:
            signum, _pending = _pending, None
            raise Interrupted(signum)


def exit_code_of(exc: BaseException) -> int:
    """The exit code of an interruption: 130 for a plain KeyboardInterrupt, 128 + signal for :class:`Interrupted`."""
    return exc.exit_code if isinstance(exc, Interrupted) else 128 + signal.SIGINT
