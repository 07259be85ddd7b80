"""Atomic file writes: every file the library writes (checkpoints, PNGs, summaries) goes
through ``atomic_open``, so an interrupted or failing write never leaves a half file under
the real name and never destroys the previous version."""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from typing import IO, Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_open(path: str, mode: str = "wb", suffix: str = "") -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing; on success flush, fsync, give it
    the usual permissions (0666 less the umask, not mkstemp's 0600) and move it onto
    ``path`` with ``os.replace``; on any failure remove it and re-raise."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=folder)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"newline": ""})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
