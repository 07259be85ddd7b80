"""One trainer per run folder.

``RunLock(folder)`` holds ``folder/.lock`` for the lifetime of a training run: an
exclusive ``flock`` on the file (the kernel drops it when the process ends, however it
ends) and the owner's pid written inside (for the message a second trainer gets). A lock
file left by a dead process is taken over; so are the temp files such a process left
half-written (``kaem.run.atomic.stale_temp_files``), which taking the lock removes.

Where ``flock`` is not available (or the filesystem refuses it) the pid alone decides:
the folder is busy while that process is alive.
"""
from __future__ import annotations

import os
from typing import Any

from kaem.run.atomic import stale_temp_files

try:
    import fcntl
except ImportError:  # not POSIX
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".lock"


class RunLockError(RuntimeError):
    """The run folder is in use by another live trainer."""


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (signal 0 probes without sending)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    return True


def _read_pid(fd: int) -> int:
    """The pid written in the lock file, 0 if none is readable."""
    try:
        text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
        return int(text.split()[0]) if text else 0
    except (OSError, ValueError):
        return 0


class RunLock:
    """Context manager: the exclusive right to train into ``folder``.

    Entering creates the folder, takes the lock (``RunLockError`` naming the owner's pid
    if another live trainer holds it) and removes stale temp files; ``taken_over`` is the
    pid of a dead previous owner whose lock was left behind (else None); ``removed`` lists
    the stale temp files deleted. Leaving removes the lock file.
    """

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.path = os.path.join(folder, LOCK_NAME)
        self.fd: int | None = None
        self.taken_over: int | None = None
        self.removed: list[str] = []

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def _busy(self, pid: int) -> RunLockError:
        who = f"pid {pid}" if pid else "a process whose pid is unknown"
        return RunLockError(f"{self.folder} is in use by another trainer ({who}; lock file {self.path}); "
                            "wait for it to finish or stop it, or choose another --out")

    def acquire(self) -> None:
        os.makedirs(self.folder, exist_ok=True)
        for _ in range(10):  # retried only when a finishing owner removed the file under us
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            previous = _read_pid(fd)
            if not self._lock(fd, previous):
                os.close(fd)
                raise self._busy(previous)
            if not _same_file(self.path, fd):
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            self.fd = fd
            self.taken_over = previous if previous and previous != os.getpid() and not pid_alive(previous) else None
            self.removed = [p for p in stale_temp_files(self.folder, pid_alive) if _remove(p)]
            return
        raise self._busy(0)

    @staticmethod
    def _lock(fd: int, previous: int) -> bool:
        """Take the flock without waiting; False if someone holds it."""
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                return False
            except OSError:  # no flock on this filesystem: fall back to the pid
                pass
        return not (previous and previous != os.getpid() and pid_alive(previous))

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.remove(self.path)  # while still holding the lock: no one else is inside
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None


def _remove(path: str) -> bool:
    try:
        os.remove(path)
        return True
    except OSError:
        return False


def _same_file(path: str, fd: int) -> bool:
    """Whether ``path`` still names the file open as ``fd``."""
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False
