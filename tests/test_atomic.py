"""atomic_open: all-or-nothing writes with ordinary permissions; made_folders: folders made
for a write that did not happen are removed again."""
from __future__ import annotations

import os

import pytest

from kaem.run.atomic import atomic_open, made_folders


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


def test_made_folders_removes_only_the_empty_folders_it_made(tmp_path):
    (tmp_path / "a").mkdir()
    with pytest.raises(RuntimeError):
        with made_folders(tmp_path / "a" / "b" / "c"):
            assert (tmp_path / "a" / "b" / "c").is_dir()
            raise RuntimeError("the download failed")
    assert os.listdir(tmp_path) == ["a"] and os.listdir(tmp_path / "a") == []  # a was there before
    with made_folders(tmp_path / "a" / "b" / "c"):
        (tmp_path / "a" / "b" / "kept.txt").write_text("x")  # b is not empty: it and a stay, c goes
    assert sorted(os.listdir(tmp_path / "a" / "b")) == ["kept.txt"]
    with made_folders(str(tmp_path / "d")):
        with atomic_open(str(tmp_path / "d" / "f.bin")) as fh:
            fh.write(b"1")
    assert (tmp_path / "d" / "f.bin").read_bytes() == b"1"
