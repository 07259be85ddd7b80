"""How a command ends: every failure as one ``error:`` line and a non-zero exit status.

``run_command(command, args)`` runs one command (a function of the parsed arguments that
returns its exit status) and turns whatever it raises into one line on stderr:

==============================================  ======  ==========================================
raised                                          status  printed
==============================================  ======  ==========================================
CommandError, ConfigError, KernelError         2       ``error: <message>``
DatasetError, CheckpointError, BackendError,    1       ``error: <message>``
TrainingError, JobFileError, RunLockError
Interrupted (training checkpointed on a signal) 130/143 ``stopped: <message>``
OSError (unwritable --out, full disk, ...)      1       ``error: <path>: <reason>``
MemoryError                                     1       ``error: out of memory; lower ...``
KeyboardInterrupt, Abandon                      128+n   ``stopped: SIGINT; files ... intact``
anything else (a bug)                           1       ``error: internal error ...`` (the
                                                        traceback with --debug or KAEM_DEBUG=1)
==============================================  ======  ==========================================

The message is also left on ``args.error`` for a job file's summary. In a run of several
ranks (``mpiexec``), rank 0 prints the errors every rank meets alike; a rank's own failure
is printed with its rank and ends every rank (``kaem/parallel/comm.py``). Files are written
atomically (``kaem/run/atomic.py``), so no failure leaves a half-written checkpoint or
dataset file behind.
"""
from __future__ import annotations

import os
import signal
import sys
import warnings
from typing import Any, Callable


class CommandError(RuntimeError):
    """A user-facing problem with a command's arguments (exit status 2)."""


def one_line(message: str) -> str:
    """A multi-line message (an INI parser's, say) joined into one line."""
    return " | ".join(part.strip() for part in message.splitlines() if part.strip())


def _warning_line(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
    """Warnings as one "warning:" line, without the source location; in a run of several
    ranks, rank 0's alone (the ranks hold the same state, so they warn alike)."""
    from kaem.parallel.comm import launcher_rank

    if launcher_rank() != 0:
        return
    print(f"warning: {message}", file=sys.stderr if file is None else file)


def _report(command: Callable[[Any], int], args: Any) -> int:
    """Run ``command(args)``; map what it raises to an exit status (table in the module doc)."""
    from kaem.backend import BackendError
    from kaem.config import ConfigError
    from kaem.datasets import DatasetError
    from kaem.kernels import KernelError, kernel_mode
    from kaem.parallel.comm import CommError, abort_job, launcher_rank
    from kaem.run.checkpoint import CheckpointError
    from kaem.run.jobs import JobFileError
    from kaem.run.lock import RunLockError
    from kaem.run.signals import Abandon, Interrupted, signal_name
    from kaem.run.trainer import TrainingError

    def fail(message: str, status: int, every_rank: bool = False) -> int:
        """Print the error line and return the status. In a run of several ranks the
        ``every_rank`` errors (bad arguments, data, checkpoints, a non-finite summed loss)
        arise on every rank alike, so rank 0 alone prints; any other failure is this rank's
        own: it prints with its rank and ends the job, so that no rank waits for it."""
        args.error = one_line(message)
        rank = launcher_rank()
        if every_rank:
            if rank == 0:
                print(f"error: {args.error}", file=sys.stderr, flush=True)
            return status
        print(f"error: {f'rank {rank}: ' if rank else ''}{args.error}", file=sys.stderr, flush=True)
        abort_job(status)
        return status

    try:
        kernel_mode()  # KAEM_KERNELS names a path, before any work
        return command(args)
    except (CommandError, ConfigError, KernelError, DatasetError, CheckpointError, BackendError, TrainingError,
            JobFileError, RunLockError, CommError) as e:
        return fail(str(e), 2 if isinstance(e, (CommandError, ConfigError, KernelError)) else 1, every_rank=True)
    except Interrupted as e:  # checkpointed: not an error
        if launcher_rank() == 0:
            print(f"stopped: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:  # unwritable --out, full disk, ...: say so, without a traceback
        return fail(f"{e.filename}: {e.strerror}" if e.filename and e.strerror else str(e), 1)
    except MemoryError:
        return fail("out of memory; lower TRAINING.batch_size, TRAINING.importance_sample_size or the model's "
                    "widths / grid sizes (or free memory), and rerun", 1)
    except (KeyboardInterrupt, Abandon) as e:
        signum = e.args[0] if isinstance(e, Abandon) else signal.SIGINT
        print(f"stopped: {signal_name(signum)}; files are written atomically, so existing ones are intact",
              file=sys.stderr)
        return 128 + signum
    except Exception as e:  # a bug: one line, the traceback only on request
        if getattr(args, "debug", False) or os.environ.get("KAEM_DEBUG"):
            raise
        return fail(f"internal error {type(e).__name__}: {e} (please report this with the command line; "
                    "rerun with --debug or KAEM_DEBUG=1 for the traceback)", 1)


def run_command(command: Callable[[Any], int], args: Any) -> int:
    """Run one command with SIGTERM raising :class:`~kaem.run.signals.Abandon` (outside
    training's own handler) and warnings printed as one line each; returns its exit status,
    every failure reported as one line (module doc)."""
    from kaem.run.signals import Abandon

    def terminate(signum: int, frame: Any) -> None:
        raise Abandon(signum)

    try:
        old_term = signal.signal(signal.SIGTERM, terminate)
    except ValueError:  # not the main thread
        old_term = None
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _warning_line
            return _report(command, args)
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
