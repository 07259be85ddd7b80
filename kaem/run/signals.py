"""SIGINT and SIGTERM during training: stop at a safe point instead of dying mid-write.

``StopRequest`` is a context manager that installs handlers for both signals. The first
signal only records itself (``signum``): the trainer finishes the iteration it is in,
writes a checkpoint of it and raises :class:`Interrupted`. A second signal abandons the
current work at once (:class:`Abandon` is raised where the program is), except inside
``critical()`` sections (the optimiser update, checkpoint writes), which always complete;
the trainer then rewinds the abandoned iteration and checkpoints the last completed one.
The exit status of an interrupted run is 128 + signal number (130 for SIGINT, 143 for
SIGTERM), as a shell reports a process killed by the signal.
"""
from __future__ import annotations

import signal
from contextlib import contextmanager
from typing import Any, Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Abandon(BaseException):
    """Raised by a second signal: give up the current (non-critical) work now.

    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` swallows it."""


class Interrupted(Exception):
    """Training stopped on a signal after checkpointing; ``exit_code`` is 128 + signum."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class StopRequest:
    """A stop flag set by SIGINT/SIGTERM while the context is active (see the module doc).

    Outside a ``with`` block (or off the main thread, where Python cannot install signal
    handlers) it is inert: ``signum`` stays None unless ``request`` is called.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._critical = 0
        self._saved: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def request(self, signum: int) -> None:
        """What a signal does: the first one sets the flag, a later one abandons the work
        in progress unless a critical section is running."""
        if self.signum is None:
            self.signum = signum
        elif not self._critical:
            raise Abandon(signum)

    def _handler(self, signum: int, frame: Any) -> None:
        self.request(signum)

    def __enter__(self) -> "StopRequest":
        for s in SIGNALS:
            try:
                self._saved[s] = signal.signal(s, self._handler)
            except ValueError:  # not the main thread: signals keep their default action
                break
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, old in self._saved.items():
            signal.signal(s, old)
        self._saved.clear()

    @contextmanager
    def critical(self) -> Iterator[None]:
        """A section a second signal may not interrupt (the stop flag still gets set)."""
        self._critical += 1
        try:
            yield
        finally:
            self._critical -= 1
