"""A run's per-epoch log, ``OUT/log.csv`` (one row per epoch plus the untrained row at
iteration 0): appended by the trainer, made to agree with the checkpoint a run continues
from, and read back for the training curves (``cli.py plot-log``) and job summaries.

A run killed after writing an epoch's row but before its checkpoint, or in the middle of
appending a row, leaves rows the resumed run will write again (or a torn last line).
``reconcile`` keeps exactly the rows of iterations the checkpoint has completed, so a
resumed run never duplicates a row.
"""
from __future__ import annotations

import csv
import io
import math
import os
from typing import Any, Sequence

from kaem.run.atomic import atomic_open

LOG_NAME = "log.csv"


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


class LogError(ValueError):
    """A training log that is missing, empty or not a KAEM log."""


def log_path(run: str) -> str:
    """The log of ``run``: a run folder (its log.csv) or the path of a CSV file itself."""
    return run if run.lower().endswith(".csv") else os.path.join(run, LOG_NAME)


def _float(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


def read_log(run: str) -> list[dict[str, float]]:
    """Every row of a run's log as floats (an empty cell, such as the untrained row's train
    loss, is NaN). Raises :class:`LogError` naming the file if it is missing, unreadable,
    has no rows or no ``epoch``/``iteration`` columns."""
    path = log_path(run)
    if not os.path.isfile(path):
        raise LogError(f"no training log {path!r} (train writes OUT/{LOG_NAME}; give a run folder or a log.csv)")
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            columns = reader.fieldnames or []
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise LogError(f"cannot read training log {path!r}: {e}") from None
    missing = [c for c in ("epoch", "iteration") if c not in columns]
    if missing:
        raise LogError(f"{path!r} is not a KAEM training log: no {', '.join(missing)} column "
                       f"(columns: {', '.join(columns) or 'none'})")
    if not rows:
        raise LogError(f"training log {path!r} has no rows yet")
    return [{k: _float(v) for k, v in row.items() if k is not None} for row in rows]


def final_row(run_dir: str) -> dict[str, float] | None:
    """The last row of a run's log, or None if there is no readable log with rows."""
    try:
        return read_log(run_dir)[-1]
    except LogError:
        return None
