"""Job files: command lines run one after the other, recorded in a summary table.

A job file (the reference's ``jobs.txt``, run by ``make train-sequential CONFIG=FILE``)
holds one command line per line, written as after ``python cli.py``::

    # two short Fashion-MNIST runs, then an evaluation
    train --dataset fmnist --epochs 2 --out runs/is
    train --dataset fmnist --mode thermo --epochs 2 --out runs/thermo
    eval --ckpt runs/is/ckpt.npz --samples 2000

``#`` starts a comment, blank lines are skipped, words are split as by the shell
(``shlex``), paths are relative to the current directory. The reference's two-word lines
``DATASET MODE`` (``MNIST vanilla``, ``SVHN thermo``) also work: they mean
``train --dataset DATASET [--mode thermo] --out runs/<dataset>-<mode>``, what
``make train-vanilla`` / ``make train-thermo`` run.

``run_jobs`` runs the jobs in file order through a callable (``run_line``: ``cli.py``'s
parser and commands, ``train`` lines with ``--resume-existing``) and rewrites the summary
``<stem>.summary.csv`` / ``.md`` after every job. The CSV is also the record read back on
the next run:

* a job recorded ``ok`` (same command, same occurrence in the file) is skipped;
* a failing job is recorded ``failed`` with its error, and the rest go on; rerun, it is
  skipped too (it would most likely fail again) unless ``retry_failed``: fix the line (a
  changed line is a new job) or its cause and rerun;
* an interrupted job (Ctrl-C) is recorded ``interrupted`` and the run stops there; rerun,
  a training job continues from its last checkpoint;
* a line that cannot be a job (unbalanced quotes, or what the ``check`` callable rejects:
  an unknown command or option) is ``failed`` from the start and never run.
"""
from __future__ import annotations

import csv
import io
import math
import os
import shlex
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from kaem.run.atomic import atomic_open
from kaem.run.failures import CommandError
from kaem.run.logfile import final_row

REFERENCE_MODES = ("vanilla", "thermo")  # the reference's second word -> train with/without --mode thermo
STATUSES = ("ok", "failed", "interrupted", "pending")
SUMMARY_COLUMNS = ("line", "command", "status", "wall_time_s", "output", "iteration", "heldout_loglik_nats",
                   "bits_per_dim", "test_mse", "note", "key")
TEXT_COLUMNS = ("line", "command", "status", "output", "note", "key")  # the others are numbers
INTERRUPTED = 130  # exit status of a command stopped by Ctrl-C
STOPPED = (INTERRUPTED, 143)  # ... by SIGINT or SIGTERM (checkpointed; the file stops there)


class JobFileError(RuntimeError):
    """A job file that cannot be read or holds no job."""


@dataclass
class Job:
    """One line of a job file.

    line: 1-based line number; argv: the command's words (after ``cli.py``); text: the
    command as one normalised string; key: text, plus ``#k`` for its k-th repetition
    (how the record recognises a job); error: why the line cannot run ("" if it can).
    """

    line: int
    argv: list[str]
    text: str
    key: str
    error: str = ""


def reference_line(words: Sequence[str]) -> list[str] | None:
    """The train command a reference line ``DATASET MODE`` stands for, or None if the words
    are not such a line: ``MNIST thermo`` -> train --dataset MNIST --mode thermo --out
    runs/mnist-thermo (dataset names are case-insensitive)."""
    if len(words) != 2 or words[1].lower() not in REFERENCE_MODES or words[0].startswith("-"):
        return None
    dataset, mode = words[0], words[1].lower()
    return ["train", "--dataset", dataset, *(["--mode", "thermo"] if mode == "thermo" else []),
            "--out", os.path.join("runs", f"{dataset.lower()}-{mode}")]


def parse_jobs(text: str, check: Callable[[list[str]], str] | None = None) -> list[Job]:
    """The jobs of a job file's text, in order; ``check(argv)`` returns why a command
    cannot run ("" if it can) and marks such lines as failed without running them."""
    jobs: list[Job] = []
    seen: dict[str, int] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        try:
            words = shlex.split(raw, comments=True)
        except ValueError as e:  # unbalanced quotes
            jobs.append(Job(n, [], raw.strip(), f"line {n}: {raw.strip()}", f"cannot split the line: {e}"))
            continue
        if not words:
            continue
        argv = reference_line(words) or words
        text_ = shlex.join(argv)
        k = seen[text_] = seen.get(text_, 0) + 1
        key = text_ if k == 1 else f"{text_} #{k}"
        jobs.append(Job(n, argv, text_, key, check(argv) if check else ""))
    return jobs


def read_job_file(path: str, check: Callable[[list[str]], str] | None = None) -> list[Job]:
    """``parse_jobs`` of the file at ``path``; a missing, unreadable or job-less file raises
    :class:`JobFileError`."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as e:
        raise JobFileError(f"cannot read job file {path!r}: {getattr(e, 'strerror', None) or e}") from None
    jobs = parse_jobs(text, check)
    if not jobs:
        raise JobFileError(f"job file {path!r} holds no job (one command line per line, e.g. "
                           "'train --dataset fmnist --epochs 1 --out runs/a'; '#' starts a comment)")
    return jobs


def write_job_file(path: str, lines: Sequence[Sequence[str]], header: str = "") -> None:
    """Write commands (lists of words) as a job file, atomically, after ``header`` (each of
    its lines becomes a ``#`` comment)."""
    text = "".join(f"# {h}\n" for h in header.splitlines()) + "".join(shlex.join(w) + "\n" for w in lines)
    with atomic_open(path, "w") as fh:
        fh.write(text)


def summary_paths(job_file: str, out_dir: str | None = None) -> tuple[str, str]:
    """(CSV, Markdown) summary paths of a job file: ``<stem>.summary.csv/.md`` in ``out_dir``,
    by default the job file's own folder."""
    stem = os.path.splitext(os.path.basename(job_file))[0]
    folder = out_dir if out_dir is not None else os.path.dirname(os.path.abspath(job_file))
    return os.path.join(folder, f"{stem}.summary.csv"), os.path.join(folder, f"{stem}.summary.md")


def read_record(csv_path: str) -> dict[str, dict[str, str]]:
    """The previous run's rows by job key; {} when there is none (or it is not a summary)."""
    try:
        with open(csv_path, newline="", encoding="utf-8") as fh:
            return {r["key"]: r for r in csv.DictReader(fh) if r.get("key") and r.get("status") in STATUSES}
    except (OSError, UnicodeDecodeError, csv.Error, KeyError):
        return {}


def plan_text(jobs: Sequence[Job], record: dict[str, dict[str, str]], retry_failed: bool = False) -> str:
    """What ``run_jobs`` would do, one line per job: skip, run, continue, or cannot run."""
    def state(job: Job) -> str:
        if job.error:
            return f"cannot run ({job.error})"
        prev = record.get(job.key, {}).get("status")
        if prev == "failed":
            return "failed before, run again" if retry_failed else "failed before, skip"
        return {"ok": "done, skip", "interrupted": "interrupted before, continue"}.get(prev, "run")

    return "".join(f"line {job.line}: {state(job)}: {job.text}\n" for job in jobs)


def _fmt(v: Any, digits: int = 4) -> str:
    if isinstance(v, float):
        return "" if not math.isfinite(v) else f"{v:.{digits}g}"
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return _fmt(f, digits) if str(v).strip() else ""


def summary_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The summary as a Markdown table: line, job, status, wall time and final figures."""
    head = ("| line | job | status | wall time (s) | iteration | held-out log-lik (nats) | bits/dim | test MSE | note |\n"
            "|---|---|---|---|---|---|---|---|---|\n")

    def cell(text: str) -> str:
        return str(text).replace("|", "/").replace("\n", " ")

    return head + "".join(
        f"| {r['line']} | `{cell(r['command'])}` | {r['status']} | {_fmt(r.get('wall_time_s', ''), 5)} | "
        f"{_fmt(r.get('iteration', ''), 10)} | {_fmt(r.get('heldout_loglik_nats', ''), 6)} | "
        f"{_fmt(r.get('bits_per_dim', ''))} | {_fmt(r.get('test_mse', ''))} | {cell(r.get('note', ''))} |\n"
        for r in rows)


def write_summary(rows: Sequence[dict[str, Any]], csv_path: str, md_path: str) -> None:
    """Write both summary files atomically."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=SUMMARY_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows({c: r.get(c, "") if c in TEXT_COLUMNS else _fmt(r.get(c, ""), 10) for c in SUMMARY_COLUMNS}
                for r in rows)
    for path, text in ((csv_path, buf.getvalue()), (md_path, summary_markdown(rows))):
        with atomic_open(path, "w") as fh:
            fh.write(text)


def job_figures(result: dict[str, Any]) -> dict[str, Any]:
    """The summary figures of a finished job from what its command returned: a training
    run's final log row (``output`` = its folder), an evaluation's own numbers, or just the
    file it wrote."""
    out = {"output": result.get("output", "")}
    if result.get("run_dir"):
        row = final_row(result["run_dir"]) or {}
        out.update(output=result["run_dir"], iteration=row.get("iteration", ""),
                   heldout_loglik_nats=row.get("heldout_loglik_nats", ""),
                   bits_per_dim=row.get("bits_per_dim", ""), test_mse=row.get("test_mse", ""))
    elif "loglik_nats" in result:
        out.update(iteration=result.get("iteration", ""), heldout_loglik_nats=result["loglik_nats"],
                   bits_per_dim=result.get("bits_per_dim", ""), test_mse=result.get("test_mse", ""))
    return out


def _starting_rows(jobs: Sequence[Job], record: dict[str, dict[str, str]], retry_failed: bool) -> list[dict[str, Any]]:
    """Each job's summary row before anything runs: the recorded one for a job that will be
    skipped, ``failed`` for a line that cannot run, else ``pending`` (keeping the wall time
    of an interrupted attempt)."""
    rows = []
    for job in jobs:
        prev = record.get(job.key, {})
        row = {"line": job.line, "command": job.text, "key": job.key, "status": "pending",
               "wall_time_s": prev.get("wall_time_s", "") if prev.get("status") == "interrupted" else ""}
        if job.error:
            row.update(status="failed", note=job.error)
        elif prev.get("status") == "ok" or (prev.get("status") == "failed" and not retry_failed):
            row.update({c: v for c, v in prev.items() if c in SUMMARY_COLUMNS}, line=job.line)
        rows.append(row)
    return rows


@dataclass
class JobRun:
    """What ``run_jobs`` did: the summary rows (file order) and the exit status (0 all ok,
    1 some failed, 130 interrupted)."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    status: int = 0


def run_jobs(jobs: Sequence[Job], execute: Callable[[list[str]], tuple[int, str, dict[str, Any]]],
             csv_path: str, md_path: str, log: Callable[[str], None] = print, retry_failed: bool = False) -> JobRun:
    """Run the jobs not recorded ``ok`` (nor ``failed``, unless ``retry_failed``) in
    ``csv_path``, one after the other.

    execute(argv) runs one command and returns (exit status, error message, result); a
    status of 130 or 143 (SIGINT, SIGTERM; or a KeyboardInterrupt) means interrupted and stops the run. Every
    job's row, including those skipped, is in the summary, rewritten after each job.
    """
    rows = _starting_rows(jobs, read_record(csv_path), retry_failed)
    todo = [(job, row) for job, row in zip(jobs, rows) if row["status"] == "pending"]
    for job, row in zip(jobs, rows):
        if job.error:
            log(f"line {job.line}: {job.error}; this job will not run")
        elif row["status"] != "pending":
            log(f"line {job.line}: {'done' if row['status'] == 'ok' else 'failed'} earlier, skipped: {job.text}")
    write_summary(rows, csv_path, md_path)
    result = JobRun(rows, 0 if all(r["status"] != "failed" for r in rows) else 1)
    for i, (job, row) in enumerate(todo, 1):
        log(f"=== job {i}/{len(todo)} (line {job.line}): {job.text}")
        t0 = time.perf_counter()
        try:
            status, message, out = execute(list(job.argv))
        except KeyboardInterrupt:
            status, message, out = INTERRUPTED, "", {}
        except Exception as e:  # a bug in one job must not end the others: record it, show where
            traceback.print_exc()
            status, message, out = 1, f"{type(e).__name__}: {e}", {}
        wall = time.perf_counter() - t0 + float(row["wall_time_s"] or 0)
        row.update(wall_time_s=round(wall, 3), **job_figures(out))
        if status in STOPPED:
            row.update(status="interrupted", note="interrupted; run the job file again to continue")
        else:
            row.update(status="ok" if status == 0 else "failed",
                       note="" if status == 0 else (message or f"exit status {status}"))
        write_summary(rows, csv_path, md_path)
        if status in STOPPED:
            result.status = status
            log(f"interrupted at line {job.line}; rerun the job file to continue from there")
            break
        if status != 0:
            result.status = 1
            log(f"line {job.line} failed ({row['note']}); going on with the next job")
    return result


# ---- running a job file's lines as commands ---------------------------------------------
Parse = Callable[[list[str]], Any]  # a line's words -> parsed arguments; raises CommandError


def parse_line(argv: list[str], parse: Parse) -> tuple[Any, str]:
    """A job-file line's words parsed as a command: (args, "") or (None, why it cannot run)."""
    try:
        args = parse(argv)
    except CommandError as e:
        return None, str(e)
    except SystemExit:  # --help and the like print and exit
        return None, "the line asks for help instead of running a command"
    return (None, "a job file cannot run another job file") if args.command == "jobs" else (args, "")


def run_line(argv: list[str], parse: Parse, dispatch: Callable[[Any], int]) -> tuple[int, str, dict[str, Any]]:
    """Run one job-file line in this process: (exit status, error message, result for the
    summary). A train line that does not name --resume runs with --resume-existing, so that
    rerunning the file continues an interrupted training and skips over a finished one."""
    args, problem = parse_line(argv, parse)
    if args is None:
        print(f"error: {problem}", file=sys.stderr)
        return 2, problem, {}
    if args.command == "train" and not args.resume:
        args.resume_existing = True
    status = dispatch(args)
    return status, getattr(args, "error", ""), getattr(args, "result", {})


def run_job_file(path: str, out: str | None, parse: Parse, dispatch: Callable[[Any], int], dry_run: bool = False,
                 retry_failed: bool = False) -> int:
    """``cli.py jobs``: run the lines of the job file at ``path`` (parsed by ``parse``, run by
    ``dispatch``), summarised in ``out`` (default: the file's folder); ``dry_run`` only
    lists what would run (status 2 if a line cannot). Returns the exit status."""
    jobs = read_job_file(path, lambda argv: parse_line(argv, parse)[1])
    csv_path, md_path = summary_paths(path, out)
    if dry_run:
        print(plan_text(jobs, read_record(csv_path), retry_failed), end="")
        return 0 if not any(j.error for j in jobs) else 2
    done = run_jobs(jobs, lambda argv: run_line(argv, parse, dispatch), csv_path, md_path,
                    log=lambda m: print(m, file=sys.stderr, flush=True), retry_failed=retry_failed)
    with open(md_path, encoding="utf-8") as fh:
        print(fh.read(), end="")
    print(f"summary: {md_path} and {csv_path}")
    return done.status
