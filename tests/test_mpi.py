"""Training under ``mpiexec -n 2`` (the optional ``mpi`` extra): the same numbers as one
process, and clean ends when a rank dies or the job is stopped.

Skipped with the reason when mpi4py or mpiexec is missing (``make install-mpi`` installs
both). Each test starts real MPI jobs of ``cli.py train`` on the test suite's small
Fashion-MNIST-like data, float64, a batch of 13 (which 2 does not divide), a grid update at
iteration 3 of 5.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import TINY_CLI

pytest.importorskip("mpi4py", reason="the mpi extra is not installed (make install-mpi)")
# the mpich wheel puts mpiexec beside the interpreter; PATH may not have it yet (pyenv shims)
MPIEXEC = shutil.which("mpiexec", path=os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]))
pytestmark = pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec on PATH (make install-mpi)")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI = os.path.join(ROOT, "cli.py")
MODES = {"is": ["--mode", "is"], "ula": ["--mode", "ula"], "automala": ["--mode", "automala"],
         "thermo": ["--mode", "thermo", "--set", "THERMODYNAMIC_INTEGRATION.num_temps=4"]}
LANGEVIN = ["--set", "POST_LANGEVIN.iters=3", "--set", "THERMODYNAMIC_INTEGRATION.N_langevin_per_temp=3"]


def _train_args(data_dir: str, out: str, mode: str, *extra: str) -> list[str]:
    return ["train", "--dataset", "fmnist", "--data-dir", data_dir, "--no-download", "--n-train", "78", "--n-test",
            "20", "--batch-size", "13", "--dtype", "float64", "--out", out, *TINY_CLI, *MODES[mode], *LANGEVIN,
            "--set", "TRAINING.importance_sample_size=32", "--set", "GRID_UPDATING.grid_update_frequency=3", *extra]


def _run(args: list[str], ranks: int = 1, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = ([MPIEXEC, "-n", str(ranks)] if ranks > 1 else []) + [sys.executable, CLI, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})


def _params(path: str) -> dict:
    with np.load(path) as z:
        return {k: z[k] for k in z.files if k.startswith("param/")}


def _assert_same_params(a: str, b: str, rtol: float = 1e-9) -> None:
    pa, pb = _params(a), _params(b)
    assert set(pa) == set(pb)
    for k in pa:
        scale = max(np.abs(pa[k]).max(), 1e-300)
        assert np.abs(pa[k] - pb[k]).max() <= rtol * scale, (k, np.abs(pa[k] - pb[k]).max() / scale)


@pytest.mark.parametrize("mode,parallel", [("is", "data"), ("ula", "data"), ("automala", "data"), ("thermo", "data"),
                                           ("thermo", "temperatures")])
def test_two_ranks_give_the_one_process_parameters(data_dir, tmp_path, mode, parallel):
    one = _run(_train_args(data_dir, str(tmp_path / "one"), mode, "--max-iters", "5"))
    assert one.returncode == 0, one.stderr
    two = _run(_train_args(data_dir, str(tmp_path / "two"), mode, "--max-iters", "5", "--parallel", parallel), ranks=2)
    assert two.returncode == 0, two.stderr
    assert two.stderr.count("saved ") == 1  # rank 0 alone speaks
    _assert_same_params(str(tmp_path / "one" / "ckpt.npz"), str(tmp_path / "two" / "ckpt.npz"))
    log = (tmp_path / "two" / "log.csv").read_text().splitlines()
    assert len(log) == 3  # header, the untrained row, the last iteration's row: written once


def test_two_ranks_then_one_equal_an_uninterrupted_run(data_dir, tmp_path):
    whole = _run(_train_args(data_dir, str(tmp_path / "whole"), "is", "--max-iters", "5"))
    assert whole.returncode == 0, whole.stderr
    first = _run(_train_args(data_dir, str(tmp_path / "split"), "is", "--max-iters", "2"), ranks=2)
    assert first.returncode == 0, first.stderr
    ckpt = str(tmp_path / "split" / "ckpt.npz")
    rest = _run(["train", "--resume", ckpt, "--data-dir", data_dir, "--no-download", "--max-iters", "5"])
    assert rest.returncode == 0, rest.stderr
    _assert_same_params(str(tmp_path / "whole" / "ckpt.npz"), ckpt)


def _processes(marker: str) -> dict[int, str]:
    """pid -> command line of the processes whose command line holds ``marker``."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in cmd:
                found[int(entry)] = cmd
    return found


def _ranks_of(marker: str) -> list[int]:
    """Pids of the ranks (python processes of cli.py) whose command line holds ``marker``."""
    return [pid for pid, cmd in _processes(marker).items()
            if "cli.py" in cmd and not os.path.basename(cmd.split(" ")[0]).startswith(("mpiexec", "hydra"))]


def _mpi_rank(pid: int) -> int:
    """The rank of a process MPICH's launcher started (its PMI_RANK)."""
    with open(f"/proc/{pid}/environ", "rb") as fh:
        env = dict(item.split(b"=", 1) for item in fh.read().split(b"\0") if b"=" in item)
    return int(env[b"PMI_RANK"])


def _start_long_job(data_dir: str, out: str, *mpiexec_opts: str, env: dict | None = None) -> tuple:
    """A 2-rank training that would run for hours, once its second iteration is logged; its
    stderr goes to a file (returned with the job)."""
    args = _train_args(data_dir, out, "is", "--epochs", "100000", "--log-every", "1")
    err = open(out + ".err", "w+")
    job = subprocess.Popen([MPIEXEC, *mpiexec_opts, "-n", "2", sys.executable, CLI, *args], stdout=err,
                           stderr=err, text=True, env={**os.environ, **(env or {})})
    t0 = time.monotonic()
    while "it 2/" not in open(out + ".err").read() or len(_ranks_of(out)) < 2:  # training has begun
        assert job.poll() is None, open(out + ".err").read()
        assert time.monotonic() - t0 < 300, "the job did not start training within 5 minutes"
        time.sleep(0.2)
    return job, err


@pytest.fixture
def no_leftovers(tmp_path):
    """Whatever happens in the test, no process of its jobs outlives it."""
    yield
    for pid in _processes(str(tmp_path)):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.parametrize("fault", ["dies", "hangs"])
def test_a_rank_that_dies_or_hangs_ends_the_job_within_a_minute(data_dir, tmp_path, fault, no_leftovers):
    """Rank 1 killed: the launcher ends the others (MPICH's default). Rank 1 stopped (a hang
    the launcher cannot see): rank 0 stops waiting at its deadline (KAEM_MPI_TIMEOUT, 5 s
    here) with one error line and ends the job."""
    out = str(tmp_path / "run")
    job, log = _start_long_job(data_dir, out, env={"KAEM_MPI_TIMEOUT": "5"})
    rank1 = next(pid for pid in _ranks_of(out) if _mpi_rank(pid) == 1)
    os.kill(rank1, signal.SIGKILL if fault == "dies" else signal.SIGSTOP)
    t0 = time.monotonic()
    job.wait(timeout=60)
    assert time.monotonic() - t0 < 60
    err = open(out + ".err").read()
    assert job.returncode != 0, err
    if fault == "hangs":
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and "no answer from the other ranks within 5 s" in lines[0], err
    else:
        assert "BAD TERMINATION" in err or "Killed" in err, err
    time.sleep(1)
    assert not _ranks_of(out)


def test_sigterm_to_mpiexec_leaves_one_valid_checkpoint(data_dir, tmp_path, no_leftovers):
    out = str(tmp_path / "run")
    job, log = _start_long_job(data_dir, out)
    job.send_signal(signal.SIGTERM)
    job.wait(timeout=60)
    err = open(out + ".err").read()
    assert job.returncode != 0  # interrupted (128 + SIGTERM on the ranks)
    assert err.count("stopped: SIGTERM") == 1, err
    from kaem.run.checkpoint import load_checkpoint

    ckpt = load_checkpoint(os.path.join(out, "ckpt.npz"), for_resume=True)
    assert ckpt["meta"]["iteration"] > 0 and ckpt["meta"]["ranks"] == 2
    assert not [f for f in os.listdir(out) if f.startswith(".tmp-")]
