"""Training over several processes and GPUs with MPI: the communicator (``comm.py``) and
each rank's part of a minibatch (``split.py``). One process is the one-rank case of the
same code."""
from kaem.parallel.comm import CommError, MPIComm, SerialComm, get_comm, launched_by_mpi
from kaem.parallel.split import PARALLEL, Split, block

__all__ = ["CommError", "MPIComm", "PARALLEL", "SerialComm", "Split", "block", "get_comm", "launched_by_mpi"]
