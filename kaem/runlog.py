"""Reading a training run's per-epoch log, ``OUT/log.csv`` (written by ``kaem/train.py``,
one row per epoch plus the untrained row at iteration 0): for the training curves
(``cli.py plot-log``) and the job summaries (``kaem/jobs.py``)."""
from __future__ import annotations

import csv
import math
import os

LOG_NAME = "log.csv"


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
