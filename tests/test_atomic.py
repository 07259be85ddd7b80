"""atomic_open: all-or-nothing writes with ordinary permissions."""
from __future__ import annotations

import os

import pytest

from kaem.run.atomic import atomic_open


def test_replaces_file_with_usual_permissions(tmp_path):
    path = tmp_path / "sub" / "f.txt"
    with atomic_open(str(path), "w") as fh:
        fh.write("new")
    mask = os.umask(0)
    os.umask(mask)
    assert path.read_text() == "new" and path.stat().st_mode & 0o777 == 0o666 & ~mask


def test_failure_keeps_previous_version_and_leaves_no_temp(tmp_path):
    path = tmp_path / "ckpt.npz"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_open(str(path), "wb") as fh:
            fh.write(b"half")
            raise RuntimeError("disk full")
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["ckpt.npz"]
