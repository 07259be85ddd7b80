"""Fault injection through the real command line: signals, kill -9 at random points,
concurrent trainers, a full disk. Every fault must end with one readable line, a non-zero
exit, no file corrupted under its final name, and at most the work since the last
completed iteration (SIGINT/SIGTERM) or the last checkpoint (kill -9) lost; a resumed run
must then equal an uninterrupted one bit for bit.

A tiny model (P=2, Q=3, 3->4->784, G=3) on the 200 generated training images, batch 20:
10 iterations per epoch."""
from __future__ import annotations

import csv
import hashlib
import os
import resource
import signal
import subprocess
import sys

import numpy as np
import pytest

import cli
from conftest import TINY_CLI
from kaem.run.checkpoint import load_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = TINY_CLI + ["--set", "GRID_UPDATING.grid_update_frequency=3"]
EPOCHS = 3


def _args(data_dir, out, *extra):
    return ["train", "--dataset", "fmnist", "--data-dir", data_dir, "--no-download", "--n-train", "200",
            "--n-test", "20", "--batch-size", "20", "--epochs", str(EPOCHS), "--out", str(out), "--log-every", "1",
            *TINY, *extra]


def _resume_args(data_dir, out):
    return ["train", "--resume", os.path.join(str(out), "ckpt.npz"), "--data-dir", data_dir, "--no-download",
            "--n-test", "20", "--log-every", "1"]


def _spawn(args, **kw):
    return subprocess.Popen([sys.executable, os.path.join(ROOT, "cli.py"), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def _wait_for(proc, prefix):
    """Read stderr lines until one starts with ``prefix``; returns the lines read."""
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if line.startswith(prefix):
            return lines
    raise AssertionError(f"never saw {prefix!r}: {''.join(lines)}")


def _sha(path):
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def _rows(out):
    with open(os.path.join(out, "log.csv"), newline="") as fh:
        return [{k: v for k, v in r.items() if k != "time_s"} for r in csv.DictReader(fh)]


def _assert_same_run(a, b):
    ca, cb = load_checkpoint(os.path.join(a, "ckpt.npz")), load_checkpoint(os.path.join(b, "ckpt.npz"))
    for group in ("params", "buffers", "optimizer"):
        for k in ca[group]:
            np.testing.assert_array_equal(ca[group][k], cb[group][k], err_msg=f"{group} {k}")
    assert ca["meta"]["iteration"] == cb["meta"]["iteration"] == EPOCHS * 10
    assert _rows(a) == _rows(b)


def _clean(out):
    """No temp file, no lock left behind."""
    left = [f for f in os.listdir(out) if f.startswith(".tmp-") or f == ".lock"]
    assert not left, left


@pytest.fixture(scope="module")
def straight(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("straight")
    assert cli.main(_args(data_dir, out)) == 0
    return str(out)


@pytest.mark.slow
@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_saves_the_last_iteration_and_resume_is_exact(sig, code, data_dir, tmp_path, straight):
    proc = _spawn(_args(data_dir, tmp_path))
    _wait_for(proc, "it 3/")  # early, so the run cannot finish first; no checkpoint exists yet
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("stopped: ")
    it = load_checkpoint(str(tmp_path / "ckpt.npz"))["meta"]["iteration"]
    assert 3 <= it < EPOCHS * 10  # the iterations since the last checkpoint were kept
    _clean(tmp_path)
    assert cli.main(_resume_args(data_dir, tmp_path)) == 0
    _assert_same_run(tmp_path, straight)
    _clean(tmp_path)


@pytest.mark.slow
def test_kill_9_at_random_points_then_resume_is_exact(data_dir, tmp_path, straight, capsys):
    """SIGKILL at random moments (some right at an epoch end, where the evaluation, the CSV
    row and the checkpoint write follow); resuming from whatever checkpoint survived (or
    starting afresh if none did) must reproduce the uninterrupted run, with no duplicate CSV
    row, the stale lock taken over and the killed writer's temp files removed."""
    rng = np.random.default_rng(10)
    out = tmp_path / "run"
    points = [(10, 0.0), (int(rng.integers(11, 20)), float(rng.uniform(0, 0.05))), (20, float(rng.uniform(0, 0.02)))]
    for i, (target, delay) in enumerate(points):
        ckpt = out / "ckpt.npz"
        args = _resume_args(data_dir, out) if ckpt.exists() else _args(data_dir, out)
        proc = _spawn(args)
        _wait_for(proc, f"it {target}/")
        if delay:
            import time

            time.sleep(delay)
        proc.kill()
        proc.wait(timeout=60)
        proc.stderr.close()
        proc.stdout.close()
        if ckpt.exists():  # the file under its final name is always a complete checkpoint
            assert load_checkpoint(str(ckpt))["meta"]["iteration"] <= target
    assert (out / ".lock").exists()  # the killed trainer's
    args = _resume_args(data_dir, out) if (out / "ckpt.npz").exists() else _args(data_dir, out)
    capsys.readouterr()
    assert cli.main(args) == 0
    assert "took over" in capsys.readouterr().err
    _assert_same_run(out, straight)
    _clean(out)


@pytest.mark.slow
def test_a_second_trainer_on_the_same_folder_is_refused(data_dir, tmp_path):
    first = _spawn(_args(data_dir, tmp_path, "--epochs", "100"))
    _wait_for(first, "it 12/")  # its first checkpoint exists
    second = subprocess.run([sys.executable, os.path.join(ROOT, "cli.py"), *_resume_args(data_dir, tmp_path)],
                            capture_output=True, text=True, timeout=120)
    assert second.returncode == 1
    assert second.stderr.strip().startswith("error:") and len(second.stderr.strip().splitlines()) == 1
    assert f"in use by another trainer (pid {first.pid}" in second.stderr
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=120)
    assert first.returncode == 143
    its = [int(r["iteration"]) for r in _rows(tmp_path)]
    assert its == sorted(set(its))  # one writer: no interleaved or repeated rows
    _clean(tmp_path)


def _fill(folder, leave):
    """A filler file leaving about ``leave`` bytes free on folder's filesystem."""
    st = os.statvfs(folder)
    free = st.f_bavail * st.f_frsize
    with open(os.path.join(folder, "filler"), "wb") as fh:
        fh.write(b"\0" * max(free - leave, 0))


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs, where the machine allows mounting one (root); else skip."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs is not permitted here (the RLIMIT_FSIZE test covers a failing write)")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=True)


@pytest.mark.slow
def test_full_disk_keeps_the_previous_checkpoint(data_dir, small_disk, capsys):
    out = small_disk / "run"
    assert cli.main(_args(data_dir, out, "--epochs", "1")) == 0
    before = _sha(out / "ckpt.npz")
    _fill(small_disk, 64 * 1024)  # less than a checkpoint
    capsys.readouterr()
    assert cli.main(_resume_args(data_dir, out) + ["--epochs", "2"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert [e for e in err if e.startswith("error")] == err[-1:], err  # one error line, the last
    assert "No space left on device" in err[-1] and str(out / "ckpt.npz") in err[-1], err
    assert _sha(out / "ckpt.npz") == before and load_checkpoint(str(out / "ckpt.npz"))["meta"]["iteration"] == 10
    _clean(out)
    os.remove(small_disk / "filler")
    assert cli.main(_resume_args(data_dir, out) + ["--epochs", "2"]) == 0
    assert [r["iteration"] for r in _rows(out)] == ["0", "10", "20"]


def _limit_file_size():
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))  # smaller than a checkpoint
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failing write, not a killed process


@pytest.mark.slow
def test_failing_checkpoint_write_names_the_users_path(data_dir, tmp_path):
    """Without a small disk to fill, the kernel's file size limit makes the checkpoint write
    fail with EFBIG: one error line naming OUT/ckpt.npz (not the temp file), nothing
    half-written under the final name or as a temp file."""
    res = subprocess.run([sys.executable, os.path.join(ROOT, "cli.py"), *_args(data_dir, tmp_path)],
                         capture_output=True, text=True, timeout=300, preexec_fn=_limit_file_size)
    assert res.returncode == 1
    err = res.stderr.strip().splitlines()[-1]
    assert err.startswith("error: ") and str(tmp_path / "ckpt.npz") in err and ".tmp-" not in err, res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "ckpt.npz").exists()
    _clean(tmp_path)
