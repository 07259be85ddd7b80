"""Downloads shared by every loader: stream a URL into a file, md5-checked, written
atomically (``kaem/run/atomic.py``), with a progress line.

A file is fetched to a temporary name beside its destination and moved into place only
after its md5 matches, so an interrupted or bad download never leaves a file that looks
complete, and a file already there is never replaced by a failing one. Folders made for a
download that then fails are removed again if they are still empty (``made_folders``), so
an offline attempt leaves no empty ``data/<name>/`` behind.
"""
from __future__ import annotations

import hashlib
import pathlib
import sys
import urllib.request
from typing import BinaryIO, Sequence

from kaem.run.atomic import atomic_open, made_folders
from kaem.datasets.base import DatasetError, Progress, progress

TIMEOUT_S = 60.0
_CHUNK = 1 << 16


class _Mismatch(Exception):
    """The bytes served do not have the expected md5."""


def fetch(url: str, out: BinaryIO, report: Progress) -> str:
    """Stream ``url`` into the open binary file ``out``; return the md5 of what was written."""
    digest = hashlib.md5()
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp:
        length = resp.headers.get("Content-Length") if resp.headers else None
        total = int(length) if length and length.isdigit() else None
        done = 0
        while chunk := resp.read(_CHUNK):
            out.write(chunk)
            digest.update(chunk)
            done += len(chunk)
            report(done, total)
        report(done, total, final=True)
    return digest.hexdigest()


def download_file(dest: pathlib.Path, urls: Sequence[str], md5: str) -> list[str]:
    """Fetch ``dest`` from the first of ``urls`` that serves bytes with this ``md5``.

    Returns the per-URL failures (empty on success). A ``dest`` that appears meanwhile
    (another process) is kept.
    """
    failures: list[str] = []
    for url in urls:
        try:
            with atomic_open(str(dest), "wb", suffix=".part") as out:
                got = fetch(url, out, progress(f"downloading {url}"))
                if got != md5:
                    raise _Mismatch(f"{url}: md5 {got}, expected {md5}")
                if dest.exists():  # appeared meanwhile: keep theirs
                    raise FileExistsError
            return []
        except FileExistsError:
            return []
        except _Mismatch as exc:
            failures.append(str(exc))
        except (OSError, ValueError) as exc:  # URLError/HTTPError are OSErrors
            failures.append(f"{url}: {exc}")
    return failures


def failure_text(failures: Sequence[str]) -> str:
    """The failed download attempts in one short clause: the last one, and how many others."""
    more = f"; {len(failures) - 1} other attempt(s) failed too" if len(failures) > 1 else ""
    return f"downloading failed ({failures[-1]}{more}); check the network"


def ensure_file(dest: pathlib.Path, urls: Sequence[str], md5: str, title: str, allow: bool,
                note: str = "") -> pathlib.Path:
    """``dest`` if it exists; else, when ``allow``, download it (md5-checked); else (or if
    every URL fails) a one-line :class:`DatasetError` saying which file to put where.
    ``note`` is one more clause for the message (e.g. an alternative source)."""
    if dest.is_file():
        return dest
    failures: list[str] = []
    if allow:
        sys.stderr.write(f"fetching {title} into {dest.parent}\n")
        try:
            with made_folders(dest.parent):
                failures = download_file(dest, urls, md5)
        except OSError as exc:
            failures = [f"cannot create {dest.parent}: {exc.strerror or exc}"]
        if not failures and dest.is_file():
            return dest
    message = (f"{title} is not available: put {dest.name} in {dest.parent.resolve()}/ (served at "
               f"{' or '.join(urls)}, md5 {md5}){', ' + note if note else ''}")
    if failures:
        raise DatasetError(f"{message}; {failure_text(failures)}")
    raise DatasetError(message, offline=True)
