"""What a training session does differently when several ranks run it (``mpiexec -n R``).

* ``lock_on_rank0``: rank 0 alone takes the run folder's lock (and makes the folder); the
  other ranks wait for it and fail with its error, so that no rank starts before the folder
  is held and none writes into it;
* ``check_split``: the split ``--parallel`` asks for fits the run (an objective that has a
  ladder to split, at least one datum or rung per rank);
* ``use_local_device``: on the GPU, each rank takes the device of its local rank.
"""
from __future__ import annotations

from contextlib import ExitStack, contextmanager
from typing import Any, Iterator

from kaem.run.failures import CommandError


class _NoLock:
    """What the other ranks hold while rank 0 holds the lock."""

    path, taken_over, removed = "", None, []


class QuietFailure(CommandError):
    """Rank 0 failed to take the lock and said why; the other ranks end with it, silently."""


@contextmanager
def lock_on_rank0(comm: Any, out: str) -> Iterator[Any]:
    """Hold ``out``'s run lock on rank 0 (making the folder if needed, removed again if it
    stays empty) for the block; the other ranks enter once rank 0 holds it, or raise
    :class:`QuietFailure` with rank 0's error. One rank: just the lock."""
    from kaem.run.atomic import made_folders
    from kaem.run.failures import one_line
    from kaem.run.lock import RunLock

    with ExitStack() as stack:
        if comm.rank == 0:
            try:
                stack.enter_context(made_folders(out))
                lock = stack.enter_context(RunLock(out))
            except BaseException as e:
                if comm.size > 1:
                    comm.bcast(one_line(str(e)) or type(e).__name__)
                raise
            if comm.size > 1:
                comm.bcast("")
        else:
            problem = comm.bcast(None)
            if problem:
                raise QuietFailure(problem)
            lock = _NoLock()
        yield lock


def check_split(comm: Any, parallel: str, cfg: Any, batch: int) -> None:
    """A CommandError unless ``--parallel`` fits: ``temperatures`` needs thermodynamic
    integration with at least one rung per rank; ``data`` at least one datum per rank."""
    from kaem.objectives import objective_mode
    from kaem.parallel import PARALLEL

    if parallel not in PARALLEL:
        raise CommandError(f"unknown --parallel {parallel!r}; valid: {', '.join(PARALLEL)}")
    if parallel == "temperatures":
        mode = objective_mode(cfg)
        if mode != "thermo":
            raise CommandError(f"--parallel temperatures splits the ladder of thermodynamic integration, but the "
                               f"objective is {mode}; use --parallel data (or --mode thermo)")
        n_t = cfg["THERMODYNAMIC_INTEGRATION"]["num_temps"]
        if comm.size > n_t:
            raise CommandError(f"--parallel temperatures with {comm.size} ranks needs at least {comm.size} "
                               f"temperatures, the config has num_temps = {n_t}; use fewer ranks or --parallel data")
    elif comm.size > batch:
        raise CommandError(f"--parallel data with {comm.size} ranks needs a batch of at least {comm.size}, "
                           f"the batch is {batch}; use fewer ranks or a larger --batch-size")


def use_local_device(be: Any, comm: Any) -> None:
    """On the GPU with several ranks, make this rank's current device that of its local rank
    (ranks on one machine share its GPUs round robin)."""
    if be.device == "gpu" and comm.size > 1:
        n = be.xp.cuda.runtime.getDeviceCount()
        be.xp.cuda.Device(comm.local_rank % n).use()
