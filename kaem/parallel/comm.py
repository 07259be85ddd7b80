"""Communicators: what the processes of a parallel run say to each other.

A run started by ``mpiexec -n R python cli.py train ...`` has R processes (ranks); a plain
``python cli.py train`` is the one-rank case, and :class:`SerialComm` makes every collective
the identity, so the training code is the same for both. :class:`MPIComm` goes through
mpi4py (the optional ``mpi`` extra; nothing imports mpi4py unless the process was started
by an MPI launcher):

* sums over ranks (``allreduce_``: gradients, the loss, diagnostics): on the GPU through
  NCCL (``cupy.cuda.nccl``) when cupy has it, otherwise staged through host memory and MPI;
* ``allgather`` (samples behind grid updates, adapted step sizes), ``sendrecv`` with one
  neighbour (replica exchange across ranks), ``bcast`` of a small object, ``any`` of a flag;
* every blocking call waits at most ``timeout`` seconds (default 60, ``KAEM_MPI_TIMEOUT``):
  a rank that died or hangs makes the others print one ``error:`` line and abort the job
  instead of waiting for ever.

``bytes_sent`` counts what this rank put on the wire (for the benchmarks).
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any

import numpy as np

from kaem.backend import array_module, to_numpy

DEFAULT_TIMEOUT_S = 60.0
ABORT_GRACE_S = 1.0  # pause between printing an error line and MPI_Abort (abort_job)
# environment variables an MPI launcher sets in its processes (MPICH/hydra, Open MPI, Slurm's PMI)
_LAUNCHER_SIZE = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS", "PMIX_SIZE")
_ABORTING = False  # set by the first MPIComm.abort of this process


class CommError(RuntimeError):
    """The parallel run cannot go on (a rank stopped answering, mpi4py is missing, ...)."""


class SerialComm:
    """One process: every collective returns its input."""

    rank, size, local_rank = 0, 1, 0
    bytes_sent = 0

    def allreduce_(self, *arrays: Any) -> None:
        """Sum each array over the ranks, in place (one rank: nothing to do)."""

    def allgather(self, a: Any) -> Any:
        """The ranks' arrays concatenated along axis 0, in rank order."""
        return a

    def sendrecv(self, a: Any, peer: int) -> Any:
        """Send ``a`` to ``peer`` and return what it sent (same shape and dtype)."""
        raise CommError("a single process has no neighbour to exchange with")

    def bcast(self, obj: Any, root: int = 0) -> Any:
        """``root``'s object on every rank."""
        return obj

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is true on any rank."""
        return bool(flag)

    def barrier(self) -> None:
        """Wait until every rank gets here."""

    def abort(self, message: str, status: int = 1) -> None:
        """Stop the whole job with one error line."""
        print(f"error: {message}", file=sys.stderr, flush=True)
        raise SystemExit(status)


class MPIComm(SerialComm):
    """The ranks of ``MPI.COMM_WORLD`` (module docstring)."""

    def __init__(self, timeout: float | None = None) -> None:
        from mpi4py import MPI

        self.MPI, self.world = MPI, MPI.COMM_WORLD
        self.rank, self.size = self.world.Get_rank(), self.world.Get_size()
        self.local_rank = self.world.Split_type(MPI.COMM_TYPE_SHARED).Get_rank()
        self.timeout = float(os.environ.get("KAEM_MPI_TIMEOUT", timeout or DEFAULT_TIMEOUT_S))
        self.bytes_sent = 0
        self._nccl: Any = None

    # ---- waiting with a deadline --------------------------------------------------------
    def _wait(self, req: Any, what: str) -> None:
        """Poll a non-blocking request until it completes or the deadline passes."""
        t0 = time.monotonic()
        spins = 0
        while not req.Test():
            spins += 1
            if spins > 200:  # after the first few hundred polls, yield the core
                time.sleep(0.0005)
            if time.monotonic() - t0 > self.timeout:
                self.abort(f"rank {self.rank}: no answer from the other ranks within {self.timeout:g} s during "
                           f"{what} (a rank died or hangs); stopping every rank")

    def abort(self, message: str, status: int = 1) -> None:
        global _ABORTING
        if not _ABORTING:  # one line per process, whatever calls abort again while it ends
            _ABORTING = True
            print(f"error: {message}", file=sys.stderr, flush=True)
            abort_job(status)
        os._exit(status)  # MPI_Abort is not meant to return; if it does, this rank still ends here

    # ---- collectives --------------------------------------------------------------------
    def allreduce_(self, *arrays: Any) -> None:
        """Sum each array over the ranks, in place: packed into one buffer per dtype, through
        NCCL for cupy arrays when cupy has it, else through host memory."""
        if self.size == 1 or not arrays:
            return
        groups: dict = {}
        for a in arrays:
            groups.setdefault((array_module(a).__name__, np.dtype(a.dtype).str), []).append(a)
        for (module, _), group in groups.items():
            xp = array_module(group[0])
            buf = xp.concatenate([a.reshape(-1) for a in group])
            self.bytes_sent += int(buf.nbytes)
            if module == "cupy" and self._nccl_comm() is not None:
                self._nccl_allreduce_(buf)
            else:
                host = np.ascontiguousarray(to_numpy(buf))
                self._wait(self.world.Iallreduce(self.MPI.IN_PLACE, host, op=self.MPI.SUM), "a sum over ranks")
                buf = xp.asarray(host)
            offset = 0
            for a in group:
                a[...] = buf[offset:offset + a.size].reshape(a.shape)
                offset += a.size

    def allgather(self, a: Any) -> Any:
        """The ranks' arrays (any leading size, the rest equal) concatenated along axis 0."""
        if self.size == 1:
            return a
        xp = array_module(a)
        host = np.ascontiguousarray(to_numpy(a))
        counts = np.zeros(self.size, dtype=np.int64)
        self._wait(self.world.Iallgather(np.array([host.size], dtype=np.int64), counts), "a gather of sizes")
        out = np.empty(int(counts.sum()), dtype=host.dtype)
        self.bytes_sent += int(host.nbytes)
        self._wait(self.world.Iallgatherv(host.reshape(-1), [out, counts]), "a gather over ranks")
        return xp.asarray(out.reshape((-1,) + host.shape[1:]))

    def sendrecv(self, a: Any, peer: int) -> Any:
        xp = array_module(a)
        host = np.ascontiguousarray(to_numpy(a))
        got = np.empty_like(host)
        self.bytes_sent += int(host.nbytes)
        reqs = [self.world.Isend(host, dest=peer, tag=7), self.world.Irecv(got, source=peer, tag=7)]
        for r in reqs:
            self._wait(r, f"an exchange with rank {peer}")
        return xp.asarray(got)

    def bcast(self, obj: Any, root: int = 0) -> Any:
        return self.world.bcast(obj, root=root)

    def any(self, flag: bool) -> bool:
        buf = np.array([1.0 if flag else 0.0])
        self.allreduce_(buf)
        return bool(buf[0] > 0)

    def barrier(self) -> None:
        self._wait(self.world.Ibarrier(), "a barrier")

    # ---- NCCL (GPU) ---------------------------------------------------------------------
    def _nccl_comm(self) -> Any:
        """cupy's NCCL communicator over the ranks (built once), or None without NCCL."""
        if self._nccl is None:
            try:
                from cupy.cuda import nccl
            except Exception:  # cupy without NCCL: host-staged reductions
                self._nccl = False
                return None
            uid = self.world.bcast(nccl.get_unique_id() if self.rank == 0 else None, root=0)
            self._nccl = nccl.NcclCommunicator(self.size, uid, self.rank)
        return self._nccl or None

    def _nccl_allreduce_(self, buf: Any) -> None:
        import cupy
        from cupy.cuda import nccl

        kinds = {"float32": nccl.NCCL_FLOAT32, "float64": nccl.NCCL_FLOAT64}
        stream = cupy.cuda.get_current_stream()
        self._nccl.allReduce(buf.data.ptr, buf.data.ptr, buf.size, kinds[np.dtype(buf.dtype).name], nccl.NCCL_SUM,
                             stream.ptr)


_LAUNCHER_RANK = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK")


def launcher_rank() -> int:
    """This process's rank as the MPI launcher set it (0 without a launcher), known before and
    without mpi4py: only rank 0 prints."""
    for key in _LAUNCHER_RANK:
        try:
            return int(os.environ[key])
        except (KeyError, ValueError):
            continue
    return 0


def abort_job(status: int) -> None:
    """In a run of several ranks whose MPI is up, end every rank now (a rank that fails must
    not leave the others waiting); otherwise nothing."""
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is not None and launched_by_mpi() and mpi.Is_initialized() and not mpi.Is_finalized():
        # The launcher relays our stderr and our abort on separate channels; without a pause
        # it may end the job before it has relayed the error line just printed.
        sys.stderr.flush()
        time.sleep(ABORT_GRACE_S)
        mpi.COMM_WORLD.Abort(status)


def launched_by_mpi() -> bool:
    """Whether an MPI launcher started this process with more than one rank."""
    for key in _LAUNCHER_SIZE:
        try:
            if int(os.environ.get(key, "1")) > 1:
                return True
        except ValueError:
            continue
    return False


def get_comm() -> SerialComm:
    """The communicator of this process: MPI's world when started by ``mpiexec -n R`` with
    R > 1 (mpi4py required), else the serial one (mpi4py is then never imported)."""
    if not launched_by_mpi():
        return SerialComm()
    try:
        return MPIComm()
    except ImportError:
        raise CommError("this process was started by mpiexec with several ranks, but mpi4py is not installed; "
                        "install the MPI extra with `pip install -e '.[mpi]'` (or `make install-mpi`)") from None
