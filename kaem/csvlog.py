"""The per-epoch CSV log of a run (``OUT/log.csv``): append a row, and make the file agree
with the checkpoint a run continues from.

A run killed after writing an epoch's row but before its checkpoint, or in the middle of
appending a row, leaves rows the resumed run will write again (or a torn last line).
``reconcile`` keeps exactly the rows of iterations the checkpoint has completed, so a
resumed run never duplicates a row.
"""
from __future__ import annotations

import csv
import io
import os
from typing import Any, Sequence

from .atomic import atomic_open


def append_row(path: str, columns: Sequence[str], row: dict[str, Any]) -> None:
    """Append one row (missing columns empty), writing the header first if the file is new."""
    new = not os.path.exists(path) or os.path.getsize(path) == 0
    with open(path, "a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore", restval="")
        if new:
            w.writeheader()
        w.writerow(row)


def _iteration(row: dict[str, str]) -> int | None:
    try:
        return int(row.get("iteration") or "")
    except ValueError:
        return None


def reconcile(path: str, columns: Sequence[str], iteration: int, row_pending: bool) -> int:
    """Drop the rows a run at ``iteration`` has not completed; returns how many were dropped.

    Kept: rows of earlier iterations, and the first row of ``iteration`` itself unless its
    row is still to be written (``row_pending``). Torn or unreadable lines are dropped too.
    The file is rewritten atomically (with the current ``columns`` as header) only when
    something changes.
    """
    if not os.path.exists(path):
        return 0
    with open(path, newline="", encoding="utf-8", errors="replace") as fh:
        lines = list(csv.reader(fh))
    if not lines:
        return 0
    header, body = lines[0], lines[1:]
    kept, seen_last = [], False
    for values in body:
        row = dict(zip(header, values)) if len(values) == len(header) else {}
        it = _iteration(row)
        if it is None or it > iteration or (it == iteration and (row_pending or seen_last)):
            continue
        seen_last |= it == iteration
        kept.append(row)
    if len(kept) == len(body) and header == list(columns):
        return 0
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", restval="")
    w.writeheader()
    w.writerows(kept)
    with atomic_open(path, "w", suffix=".csv") as fh:
        fh.write(buf.getvalue())
    return len(body) - len(kept)
