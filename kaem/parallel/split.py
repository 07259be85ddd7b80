"""Which part of a minibatch's work one process does.

A minibatch of B data is split over the R ranks of a run in one of two ways
(``--parallel``):

* ``data`` (every objective): rank r holds the data rows [lo, hi) = [⌊rB/R⌋, ⌊(r+1)B/R⌋),
  and every chain of those data; R need not divide B;
* ``temperatures`` (thermodynamic integration): every rank holds the whole batch, and the
  rungs 1..N_t of the ladder are split the same way, rank r holding rungs [k0, k1).

Each rank computes its part of the loss and its gradients (partial sums of the batch's),
so that their sum over ranks is the one-process result; ``kaem/run/trainer.py`` sums them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kaem.parallel.comm import SerialComm

PARALLEL = ("data", "temperatures")


def block(n: int, rank: int, size: int) -> tuple[int, int]:
    """Rank ``rank``'s share [lo, hi) of n items split over ``size`` ranks as evenly as can be."""
    return n * rank // size, n * (rank + 1) // size


@dataclass(frozen=True)
class Split:
    """One rank's part: the communicator, the global batch size B, this rank's data rows
    [lo, hi), and whether the ladder rather than the data is split."""

    batch: int
    lo: int
    hi: int
    comm: Any = field(default_factory=SerialComm)
    temperatures: bool = False

    @classmethod
    def serial(cls, batch: int) -> "Split":
        """One process: every row."""
        return cls(batch, 0, batch)

    @classmethod
    def of(cls, comm: Any, batch: int, parallel: str = "data") -> "Split":
        """This rank's part of a batch of ``batch`` data under ``--parallel``."""
        if parallel not in PARALLEL:
            raise ValueError(f"unknown --parallel {parallel!r}; valid: {', '.join(PARALLEL)}")
        if parallel == "temperatures":
            return cls(batch, 0, batch, comm, True)
        lo, hi = block(batch, comm.rank, comm.size)
        return cls(batch, lo, hi, comm)

    @property
    def local(self) -> int:
        """Data rows this rank holds."""
        return self.hi - self.lo

    def rungs(self, n_rungs: int) -> tuple[int, int]:
        """This rank's rungs [k0, k1) of ``n_rungs`` (all of them unless the ladder is split)."""
        return block(n_rungs, self.comm.rank, self.comm.size) if self.temperatures else (0, n_rungs)
