"""Atomic file writes: every file the library writes (checkpoints, PNGs, summaries) goes
through ``atomic_open``, so an interrupted or failing write never leaves a half file under
the real name and never destroys the previous version.

The temporary file is ``.tmp-<pid>-<random><suffix>`` beside the target: the pid lets a
later run tell a temp file left by a killed process from one still being written
(``stale_temp_files``). ``made_folders`` creates the folders a write needs and removes them
again if nothing was written into them (a failed download or a refused run leaves no empty
folder behind).
"""
from __future__ import annotations

import os
import pathlib
import re
import tempfile
from contextlib import contextmanager
from typing import IO, Callable, Iterator

TEMP_PREFIX = ".tmp-"
# ".tmp-<pid>-<mkstemp's 8 characters><suffix>"; the older ".tmp-<8 characters><suffix>" has no pid
_TEMP_NAME = re.compile(r"^\.tmp-(?:(\d+)-)?[A-Za-z0-9_]{8}(\.[A-Za-z0-9]+)?$")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_open(path: str, mode: str = "wb", suffix: str = "") -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing; on success flush, fsync, give it
    the usual permissions (0666 less the umask, not mkstemp's 0600) and move it onto
    ``path`` with ``os.replace``; on any failure remove it and re-raise. An ``OSError``
    (unwritable folder, full disk, ...) is re-raised naming ``path``, not the temp file."""
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-", suffix=suffix, dir=folder)
        with os.fdopen(fd, mode, **({} if "b" in mode else {"newline": ""})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(e, OSError) and e.errno is not None and e.filename != path:
            raise OSError(e.errno, e.strerror, path) from None  # the user's path, not ours
        raise


def temp_owner(name: str) -> int | None:
    """The pid in an ``atomic_open`` temp file name; 0 for an old name without one; None
    if ``name`` is not such a temp file."""
    m = _TEMP_NAME.match(name)
    if m is None:
        return None
    return int(m.group(1)) if m.group(1) else 0


def stale_temp_files(folder: str, alive: Callable[[int], bool]) -> list[str]:
    """Paths of ``atomic_open`` temp files in ``folder`` whose writer is gone (its pid is
    not ``alive``, or the name carries none); other files are never listed."""
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    out = []
    for name in names:
        pid = temp_owner(name)
        path = os.path.join(folder, name)
        if pid is not None and os.path.isfile(path) and not (pid and alive(pid)):
            out.append(path)
    return out


@contextmanager
def made_folders(folder: str | os.PathLike) -> Iterator[None]:
    """Create ``folder`` and its missing parents for the files about to be written there;
    on leaving, remove those of them that are still empty (deepest first). A folder that
    existed before, and every file, are left alone: ``rmdir`` only removes empty folders."""
    folder = pathlib.Path(folder)
    created = []
    for parent in (folder, *folder.parents):
        if parent.exists():
            break
        created.append(parent)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        yield
    finally:
        for path in created:
            try:
                path.rmdir()
            except OSError:  # not empty (a file arrived), or gone: keep the rest as well
                break
