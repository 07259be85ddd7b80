"""SVHN, CIFAR-10 and CelebA loaders on tiny files written in the real formats
(tests/datafiles.py), the registry's resize, and the shared download helper."""
from __future__ import annotations

import hashlib
import os
import tarfile

import numpy as np
import pytest

from datafiles import (CIFAR_TRAIN_BATCHES, cifar_batch_bytes, random_pixels, write_celeba, write_cifar10,
                       write_svhn, write_tar_gz)
from kaem import datasets
from kaem.datasets import DatasetError, celeba, cifar10, download, svhn


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def no_fetch(monkeypatch):
    def refuse(*args):
        raise AssertionError("tried to download")

    monkeypatch.setattr(download, "fetch", refuse)


# --------------------------------------------------------------------------- registry


def test_registry_lists_every_dataset_with_its_shape():
    shapes = {"mnist": (1, 28, 28), "fmnist": (1, 28, 28), "mnist32": (1, 32, 32), "fmnist32": (1, 32, 32),
              "svhn": (3, 32, 32), "cifar10": (3, 32, 32), "celeba": (3, 64, 64), "darcy": (1, 32, 32)}
    assert set(datasets.DATASETS) == set(shapes)
    for name, shape in shapes.items():
        assert datasets.dataset_shape(name) == shape
        assert datasets.dataset_shape(name, 16) == shape[:1] + (16, 16)
    with pytest.raises(DatasetError, match="integer >= 2"):
        datasets.dataset_shape("svhn", 1)


# --------------------------------------------------------------------------- svhn


def test_svhn_reads_mat_files(tmp_path, no_fetch):
    wrote = write_svhn(tmp_path)
    for split in ("train", "test"):
        x = datasets.load_dataset("svhn", split, tmp_path, download=False)
        assert x.shape == wrote[split].shape and x.dtype == np.float32
        np.testing.assert_allclose(x * 255, wrote[split], atol=1e-3)
    first = datasets.load_dataset("svhn", "train", tmp_path, n=2)
    assert first.shape == (2, 3, 32, 32)
    np.testing.assert_array_equal(first, datasets.load_dataset("svhn", "train", tmp_path)[:2])
    with pytest.raises(DatasetError, match="n=7 .*only 6"):
        datasets.load_dataset("svhn", "train", tmp_path, n=7)


def test_svhn_resize(tmp_path, no_fetch):
    write_svhn(tmp_path)
    x = datasets.load_dataset("svhn", "test", tmp_path, resize=16)
    full = datasets.load_dataset("svhn", "test", tmp_path)
    assert x.shape == (4, 3, 16, 16) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    # shrinking keeps each image's mean colour (the test images are a flat colour plus noise)
    np.testing.assert_allclose(x.mean(axis=(2, 3)), full.mean(axis=(2, 3)), atol=0.01)


def test_svhn_missing_file_says_where_and_what(tmp_path, no_fetch):
    with pytest.raises(DatasetError) as info:
        datasets.load_dataset("svhn", "test", tmp_path / "data", download=False)
    msg = str(info.value)
    assert "test_32x32.mat" in msg and str((tmp_path / "data" / "svhn").resolve()) in msg
    assert "http://ufldl.stanford.edu/housenumbers/test_32x32.mat" in msg and svhn.MD5["test_32x32.mat"] in msg
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("content, why", [
    (lambda raw: raw[: len(raw) // 2], "not a readable MATLAB file"),
    (lambda raw: b"hello, not matlab" * 20, "not a readable MATLAB file"),
    ("foreign", "expected uint8 X"),
])
def test_svhn_corrupt_or_foreign_files(tmp_path, content, why):
    from scipy.io import savemat

    write_svhn(tmp_path)
    path = tmp_path / "svhn" / "test_32x32.mat"
    if content == "foreign":
        savemat(path, {"X": np.zeros((28, 28, 5))})
    else:
        path.write_bytes(content(path.read_bytes()))
    before = _sha(path)
    with pytest.raises(DatasetError, match=why) as info:
        datasets.load_dataset("svhn", "test", tmp_path)
    assert str(path) in str(info.value) and _sha(path) == before


def test_svhn_download_is_md5_checked(tmp_path, monkeypatch):
    write_svhn(tmp_path / "mirror")
    served = tmp_path / "mirror" / "svhn"
    monkeypatch.setattr(svhn, "URL", served.as_uri() + "/")
    monkeypatch.setitem(svhn.MD5, "test_32x32.mat", "0" * 32)
    with pytest.raises(DatasetError, match="md5"):
        datasets.load_dataset("svhn", "test", tmp_path / "data")
    assert not (tmp_path / "data").exists()  # nothing half-written, and no empty folder made for it
    monkeypatch.setitem(svhn.MD5, "test_32x32.mat", hashlib.md5((served / "test_32x32.mat").read_bytes()).hexdigest())
    x = datasets.load_dataset("svhn", "test", tmp_path / "data")
    assert x.shape == (4, 3, 32, 32)
    assert sorted(p.name for p in (tmp_path / "data" / "svhn").iterdir()) == ["test_32x32.mat"]


# --------------------------------------------------------------------------- cifar10


@pytest.mark.parametrize("archive", [False, True])
def test_cifar10_reads_binary_batches(tmp_path, archive, no_fetch):
    wrote = write_cifar10(tmp_path, per_batch=3, n_test=4, archive=archive)
    for split in ("train", "test"):
        x = datasets.load_dataset("cifar10", split, tmp_path, download=False)
        assert x.shape == wrote[split].shape and x.dtype == np.float32
        np.testing.assert_allclose(x * 255, wrote[split], atol=1e-3)
    part = datasets.load_dataset("cifar10", "train", tmp_path, n=4)  # crosses into data_batch_2
    np.testing.assert_allclose(part * 255, wrote["train"][:4], atol=1e-3)
    with pytest.raises(DatasetError, match="n=16 .*only 15"):
        datasets.load_dataset("cifar10", "train", tmp_path, n=16)
    if archive:
        assert sorted(os.listdir(tmp_path / "cifar10")) == ["cifar-10-binary.tar.gz"]  # nothing extracted


def test_cifar10_archive_reads_only_what_n_needs(tmp_path):
    """The first batch is enough for n=3: the broken later members are never reached."""
    x = random_pixels(3, (3, 32, 32), 0)
    members = {"cifar-10-batches-bin/data_batch_1.bin": cifar_batch_bytes(x),
               "cifar-10-batches-bin/data_batch_2.bin": b"\x00" * 10}
    (tmp_path / "cifar10").mkdir()
    write_tar_gz(tmp_path / "cifar10" / "cifar-10-binary.tar.gz", members)
    np.testing.assert_allclose(datasets.load_dataset("cifar10", "train", tmp_path, n=3) * 255, x, atol=1e-3)
    with pytest.raises(DatasetError, match="data_batch_2.bin is not a CIFAR-10 binary batch"):
        datasets.load_dataset("cifar10", "train", tmp_path, n=4)


@pytest.mark.parametrize("layout", ["folder", "archive", "archive-in-bin-name"])
def test_cifar10_python_version_is_refused(tmp_path, layout, no_fetch):
    folder = tmp_path / "cifar10"
    folder.mkdir()
    if layout == "folder":
        (folder / "cifar-10-batches-py").mkdir()
        (folder / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"\x80\x04pickle")
    else:
        name = "cifar-10-python.tar.gz" if layout == "archive" else "cifar-10-binary.tar.gz"
        write_tar_gz(folder / name, {"cifar-10-batches-py/data_batch_1": b"\x80\x04pickle"})
    with pytest.raises(DatasetError) as info:
        datasets.load_dataset("cifar10", "train", tmp_path, download=False)
    msg = str(info.value)
    assert "python version" in msg and "never unpickles" in msg
    assert "cifar-10-binary.tar.gz" in msg and cifar10.MD5 in msg


def test_cifar10_missing_says_where_and_what(tmp_path, no_fetch):
    with pytest.raises(DatasetError) as info:
        datasets.load_dataset("cifar10", "test", tmp_path, download=False)
    msg = str(info.value)
    assert "cifar-10-binary.tar.gz" in msg and str((tmp_path / "cifar10").resolve()) in msg
    assert cifar10.URL in msg and cifar10.MD5 in msg and "cifar-10-batches-bin" in msg


@pytest.mark.parametrize("damage, why", [
    ("truncate-archive", "corrupt or truncated"),
    ("garbage-archive", "corrupt or truncated"),
    ("short-batch", "not a positive multiple"),
    ("cifar100-labels", "label bytes above 9"),
    ("missing-member", "has no test_batch.bin"),
])
def test_cifar10_corrupt_or_foreign(tmp_path, damage, why):
    folder = tmp_path / "cifar10"
    if damage in ("truncate-archive", "garbage-archive", "missing-member"):
        write_cifar10(tmp_path, archive=True)
        path = folder / "cifar-10-binary.tar.gz"
        raw = path.read_bytes()
        if damage == "missing-member":
            write_tar_gz(path, {"cifar-10-batches-bin/data_batch_1.bin": cifar_batch_bytes(random_pixels(2, (3, 32, 32), 0))})
        else:
            path.write_bytes(raw[: len(raw) // 2] if damage == "truncate-archive" else b"\x1f\x8b" + bytes(500))
    else:
        write_cifar10(tmp_path)
        path = folder / "cifar-10-batches-bin" / "test_batch.bin"
        raw = bytearray(path.read_bytes())
        if damage == "short-batch":
            raw = raw[:-5]
        else:
            raw[0] = 57
        path.write_bytes(bytes(raw))
    before = _sha(path)
    with pytest.raises(DatasetError, match=why) as info:
        datasets.load_dataset("cifar10", "test", tmp_path, download=False)
    assert str(path) in str(info.value) and _sha(path) == before


# --------------------------------------------------------------------------- celeba


@pytest.mark.parametrize("archive", [False, True])
def test_celeba_crops_resizes_and_splits(tmp_path, archive):
    names = write_celeba(tmp_path, n_train=5, n_test=3, archive=archive)
    x = datasets.load_dataset("celeba", "train", tmp_path, resize=8)
    assert x.shape == (5, 3, 8, 8) and x.dtype == np.float32
    # the red bands above and below the centre square are cropped away: each output image is
    # the flat centre colour (to JPEG accuracy), with no red bleeding in at the top or bottom
    spread = x.max(axis=(2, 3)) - x.min(axis=(2, 3))
    assert spread.max() < 0.08
    from datafiles import celeba_face
    for i, name in enumerate(names["train"]):
        centre = celeba_face(int(name[:6]))[22, 18] / 255.0
        np.testing.assert_allclose(x[i].mean(axis=(1, 2)), centre, atol=0.04)
    t = datasets.load_dataset("celeba", "test", tmp_path, resize=8)
    assert t.shape == (3, 3, 8, 8)  # validation images belong to neither split
    with pytest.raises(DatasetError, match="n=6 .*only 5"):
        datasets.load_dataset("celeba", "train", tmp_path, n=6, resize=8)


def test_celeba_decodes_once_then_reads_the_cache(tmp_path, monkeypatch):
    write_celeba(tmp_path, n_train=5)
    first = datasets.load_dataset("celeba", "train", tmp_path, n=3, resize=8)
    cache = tmp_path / "celeba" / "cache"
    assert len(list(cache.glob("train_8px_3_*.npy"))) == 1
    calls = []
    real_decode = celeba.decode
    monkeypatch.setattr(celeba, "decode", lambda *a: calls.append(a[2]) or real_decode(*a))
    again = datasets.load_dataset("celeba", "train", tmp_path, n=2, resize=8)
    np.testing.assert_array_equal(again, first[:2])
    assert calls == []  # served from the cache
    more = datasets.load_dataset("celeba", "train", tmp_path, n=5, resize=8)
    assert [os.path.basename(c) for c in calls] == ["000004.jpg", "000005.jpg"]  # only what the cache lacked
    np.testing.assert_array_equal(more[:3], first)
    assert [p.name.split("_")[2] for p in cache.glob("train_8px_*.npy")] == ["5"]  # the smaller one superseded
    other = datasets.load_dataset("celeba", "train", tmp_path, n=2, resize=12)  # another size: its own cache
    assert other.shape == (2, 3, 12, 12) and len(list(cache.glob("train_12px_2_*.npy"))) == 1


def test_celeba_cache_of_other_files_is_not_used(tmp_path):
    write_celeba(tmp_path, n_train=3)
    datasets.load_dataset("celeba", "train", tmp_path, resize=8)
    img = tmp_path / "celeba" / "img_align_celeba"
    (img / "000002.jpg").rename(img / "000009.jpg")  # same count, different files
    (img / "000009.jpg").write_bytes((img / "000003.jpg").read_bytes())
    x = datasets.load_dataset("celeba", "train", tmp_path, resize=8)
    np.testing.assert_allclose(x[1], x[2], atol=1e-6)  # 000003 and 000009 are the same picture
    assert len(list((tmp_path / "celeba" / "cache").glob("train_8px_*.npy"))) == 1


def test_celeba_missing_and_broken(tmp_path):
    with pytest.raises(DatasetError) as info:
        datasets.load_dataset("celeba", "train", tmp_path, resize=8)
    msg = str(info.value)
    assert "img_align_celeba/" in msg and "img_align_celeba.zip" in msg and str((tmp_path / "celeba").resolve()) in msg
    write_celeba(tmp_path, n_train=3)
    bad = tmp_path / "celeba" / "img_align_celeba" / "000002.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(DatasetError, match="000002.jpg is not a readable JPEG"):
        datasets.load_dataset("celeba", "train", tmp_path, resize=8)
    assert not (tmp_path / "celeba" / "cache").exists() or not list((tmp_path / "celeba" / "cache").iterdir())
    (tmp_path / "celeba" / "img_align_celeba" / "me.jpg").write_bytes(b"x")
    with pytest.raises(DatasetError, match="'me.jpg' is not a CelebA image name"):
        datasets.load_dataset("celeba", "train", tmp_path, resize=8)


def test_celeba_corrupt_zip(tmp_path):
    write_celeba(tmp_path, archive=True)
    path = tmp_path / "celeba" / "img_align_celeba.zip"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DatasetError, match="not a readable zip"):
        datasets.load_dataset("celeba", "test", tmp_path, resize=8)


def test_celeba_real_geometry_178x218(tmp_path):
    """The real frame: 178×218 cropped to its centre 178×178, then 64×64 by default."""
    write_celeba(tmp_path, n_train=1, n_test=1, n_val=0, size=(178, 218))
    x = datasets.load_dataset("celeba", "test", tmp_path)
    assert x.shape == (1, 3, 64, 64)
    assert (x.max(axis=(2, 3)) - x.min(axis=(2, 3))).max() < 0.08  # no red band left


# --------------------------------------------------------------------------- download helper


def test_download_file_keeps_nothing_on_failure_and_tries_the_next_url(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"payload" * 100)
    good = hashlib.md5(src.read_bytes()).hexdigest()
    dest = tmp_path / "out" / "f.bin"
    failures = download.download_file(dest, [(tmp_path / "nope").as_uri(), src.as_uri()], good)
    assert failures == [] and dest.read_bytes() == src.read_bytes()
    dest.unlink()
    failures = download.download_file(dest, [src.as_uri()], "0" * 32)
    assert len(failures) == 1 and "md5" in failures[0]
    assert os.listdir(tmp_path / "out") == []
