"""Ranks as threads of one process, for testing the parallel objectives without MPI.

``run_ranks(R, fn)`` calls ``fn(comm)`` on R threads at once, each with a :class:`ThreadComm`
of rank r, and returns their results in rank order. The collectives rendezvous through a
shared barrier and mailbox: ``allreduce_`` sums in rank order, ``allgather`` concatenates in
rank order, ``sendrecv`` swaps arrays between two ranks, ``bcast`` and ``any`` as MPI's.
"""
from __future__ import annotations

import queue
import threading
from collections import defaultdict
from typing import Any, Callable

import numpy as np


class _Shared:
    def __init__(self, size: int) -> None:
        self.size = size
        self.barrier = threading.Barrier(size)
        self.slots: list[Any] = [None] * size
        self.mail: dict = defaultdict(queue.Queue)  # (sender, receiver) -> messages in order
        self.lock = threading.Lock()


class ThreadComm:
    """One rank of a group of threads (see the module docstring)."""

    def __init__(self, shared: _Shared, rank: int) -> None:
        self.s, self.rank, self.size, self.local_rank = shared, rank, shared.size, rank
        self.bytes_sent = 0

    def _exchange(self, value: Any) -> list:
        """Every rank's value, in rank order."""
        self.s.barrier.wait()
        self.s.slots[self.rank] = value
        self.s.barrier.wait()
        out = list(self.s.slots)
        self.s.barrier.wait()
        return out

    def allreduce_(self, *arrays: Any) -> None:
        everyone = self._exchange([np.array(a, copy=True) for a in arrays])
        for j, a in enumerate(arrays):
            total = everyone[0][j].copy()
            for r in range(1, self.size):
                total += everyone[r][j]
            a[...] = total

    def allgather(self, a: Any) -> Any:
        return np.concatenate(self._exchange(np.array(a, copy=True)))

    def sendrecv(self, a: Any, peer: int) -> Any:
        with self.s.lock:
            out, inbox = self.s.mail[(self.rank, peer)], self.s.mail[(peer, self.rank)]
        out.put(np.array(a, copy=True))
        return inbox.get(timeout=60)

    def bcast(self, obj: Any, root: int = 0) -> Any:
        return self._exchange(obj)[root]

    def any(self, flag: bool) -> bool:
        return any(self._exchange(bool(flag)))

    def barrier(self) -> None:
        self.s.barrier.wait()


def run_ranks(size: int, fn: Callable[[ThreadComm], Any]) -> list:
    """fn(comm) on ``size`` threads at once; their results (an exception is re-raised)."""
    shared = _Shared(size)
    results: list = [None] * size
    errors: list = []

    def main(r: int) -> None:
        try:
            results[r] = fn(ThreadComm(shared, r))
        except BaseException as e:  # noqa: BLE001 (re-raised below)
            errors.append(e)
            shared.barrier.abort()

    threads = [threading.Thread(target=main, args=(r,)) for r in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results
