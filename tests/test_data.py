"""Tests for kaem/datasets/idx.py (via the registry too): IDX reading, the search order, downloads (no network)."""
from __future__ import annotations

import gzip
import hashlib
import os
import pathlib
import struct

import numpy as np
import pytest

from kaem.datasets import idx as data
from kaem.datasets import download
from kaem import datasets
from kaem.datasets import DatasetError

FMNIST_SYSTEM_DIR = pathlib.Path("/usr/share/datasets/fashion-mnist")


# --------------------------------------------------------------------------- helpers


def idx_bytes(arr: np.ndarray) -> bytes:
    """Encode ``arr`` as an IDX file (uint8 or int32 only: enough for these tests)."""
    code = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C}[arr.dtype]
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def write_idx(path: pathlib.Path, arr: np.ndarray, gz: bool = False) -> pathlib.Path:
    payload = idx_bytes(arr)
    path.write_bytes(gzip.compress(payload) if gz else payload)
    return path


def tiny_images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 28, 28), dtype=np.uint8)


def make_dataset(folder: pathlib.Path, n_train: int = 5, n_test: int = 3, gz: bool = True):
    """The four standard files in ``folder`` (gzipped or raw), with tiny contents."""
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    arrays = {
        "train-images-idx3-ubyte": tiny_images(n_train, 1),
        "train-labels-idx1-ubyte": np.arange(n_train, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte": tiny_images(n_test, 2),
        "t10k-labels-idx1-ubyte": np.arange(n_test, dtype=np.uint8) % 10,
    }
    for base, arr in arrays.items():
        write_idx(folder / f"{base}{suffix}", arr, gz=gz)
    return arrays


@pytest.fixture
def no_system_dirs(monkeypatch):
    """Hide /usr/share/datasets/... so tests do not depend on what this machine has."""
    for name, src in data.SOURCES.items():
        monkeypatch.setitem(data.SOURCES, name, data._Source(
            src.title, src.mirrors, src.md5, (), src.apt_package))


def serve_from(monkeypatch, name: str, mirrors: list[pathlib.Path | str], md5: dict[str, str]):
    """Point ``name``'s mirrors at local folders (file:// URLs) with the given md5s."""
    urls = tuple(m if isinstance(m, str) else m.as_uri() + "/" for m in mirrors)
    src = data.SOURCES[name]
    monkeypatch.setitem(data.SOURCES, name, data._Source(src.title, urls, md5, (), None))


def gz_mirror(folder: pathlib.Path) -> dict[str, str]:
    """Fill ``folder`` with the four .gz files; return their md5s keyed by file name."""
    make_dataset(folder, gz=True)
    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in folder.glob("*.gz")}


# --------------------------------------------------------------------------- read_idx


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("arr", [
    tiny_images(4),
    np.arange(7, dtype=np.uint8),
    np.array([[-5, 70000], [1, 2]], dtype=np.int32),
])
def test_read_idx_round_trip(tmp_path, arr, gz):
    out = data.read_idx(write_idx(tmp_path / "f", arr, gz=gz))
    assert out.dtype == arr.dtype and out.dtype.isnative
    np.testing.assert_array_equal(out, arr)
    out[...] = 0  # writable, owns its memory


@pytest.mark.parametrize("mangle, why", [
    (lambda b: b[:-1], "truncated"),
    (lambda b: b[:6], "header truncated"),
    (lambda b: b + b"\0", "trailing bytes"),
    (lambda b: b"\x00\x01" + b[2:], "magic"),
    (lambda b: b[:2] + b"\x42" + b[3:], "magic"),
    (lambda b: b[:3] + b"\x00" + b[4:], "zero dimensions"),
    (lambda b: b[:2], "only 2 bytes"),
])
def test_read_idx_rejects_bad_raw_files(tmp_path, mangle, why):
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(mangle(idx_bytes(tiny_images(2))))
    with pytest.raises(DatasetError, match=why) as info:
        data.read_idx(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("mangle", [
    lambda b: b[: len(b) // 2],  # truncated gzip stream
    lambda b: b[:-8] + bytes(8),  # CRC / size trailer wrong
    lambda b: b[:12] + bytes(len(b) - 12),  # deflate data destroyed
])
def test_read_idx_rejects_corrupt_gzip(tmp_path, mangle):
    path = tmp_path / "bad.gz"
    path.write_bytes(mangle(gzip.compress(idx_bytes(tiny_images(3)))))
    with pytest.raises(DatasetError, match="corrupt or truncated gzip") as info:
        data.read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_missing_file_names_it(tmp_path):
    with pytest.raises(DatasetError, match="cannot read .*nope"):
        data.read_idx(tmp_path / "nope")


# --------------------------------------------------------------------------- names


def test_shapes_and_unknown_names(tmp_path):
    assert data.DATASETS == ("mnist", "fmnist", "mnist32", "fmnist32")
    for n in data.DATASETS:
        side = 32 if n.endswith("32") else 28
        assert data.dataset_shape(n) == datasets.dataset_shape(n) == (1, side, side)
    for call in (lambda: data.dataset_shape("cifar"), lambda: data.locate("cifar", tmp_path),
                 lambda: data.load_dataset("cifar", data_dir=tmp_path)):
        with pytest.raises(DatasetError, match="mnist, fmnist, mnist32, fmnist32"):
            call()
    with pytest.raises(DatasetError, match="train, test"):
        data.load_dataset("mnist", "val", data_dir=tmp_path, download=False)


# --------------------------------------------------------------------------- load_dataset


@pytest.mark.parametrize("gz", [False, True])
def test_load_dataset_shapes_dtype_scaling(tmp_path, gz, no_system_dirs):
    arrays = make_dataset(tmp_path / "mnist", gz=gz)
    for split, base, n in (("train", "train-images-idx3-ubyte", 5),
                           ("test", "t10k-images-idx3-ubyte", 3)):
        x = data.load_dataset("mnist", split, data_dir=tmp_path, download=False)
        assert x.shape == (n, 1, 28, 28) and x.dtype == np.float32
        assert isinstance(x, np.ndarray) and 0.0 <= x.min() and x.max() <= 1.0
        np.testing.assert_allclose(x[:, 0] * 255.0, arrays[base], atol=1e-4)


@pytest.mark.parametrize("name", ["mnist32", "fmnist32"])
def test_padded_variants_read_the_same_files(tmp_path, name, no_system_dirs):
    arrays = make_dataset(tmp_path / name[:-2])  # mnist32 reads <data_dir>/mnist/
    x = data.load_dataset(name, "test", data_dir=tmp_path, download=False, n=2)
    assert x.shape == (2, 1, 32, 32) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, 0, 2:30, 2:30] * 255.0, arrays["t10k-images-idx3-ubyte"][:2], atol=1e-4)
    border = np.ones((32, 32), bool)
    border[2:30, 2:30] = False
    assert not x[:, 0, border].any()
    with pytest.raises(DatasetError) as info:  # missing files: the message names the shared folder
        data.load_dataset(name, data_dir=tmp_path / "empty", download=False)
    assert str((tmp_path / "empty" / name[:-2]).resolve()) in str(info.value)


def test_load_dataset_scaling_endpoints(tmp_path, no_system_dirs):
    make_dataset(tmp_path / "fmnist")
    imgs = np.zeros((2, 28, 28), np.uint8)
    imgs[1] = 255
    write_idx(tmp_path / "fmnist" / "t10k-images-idx3-ubyte.gz", imgs, gz=True)
    x = data.load_dataset("fmnist", "test", data_dir=tmp_path, download=False)
    assert x[0].max() == 0.0 and x[1].min() == 1.0


def test_load_dataset_n(tmp_path, no_system_dirs):
    make_dataset(tmp_path / "mnist", n_train=5)
    full = data.load_dataset("mnist", data_dir=tmp_path, download=False)
    part = data.load_dataset("mnist", data_dir=tmp_path, download=False, n=2)
    np.testing.assert_array_equal(part, full[:2])
    assert data.load_dataset("mnist", data_dir=tmp_path, download=False, n=5).shape[0] == 5
    with pytest.raises(DatasetError, match="n=6 .*only 5"):
        data.load_dataset("mnist", data_dir=tmp_path, download=False, n=6)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(DatasetError, match="positive integer"):
            data.load_dataset("mnist", data_dir=tmp_path, download=False, n=bad)


def test_load_dataset_wrong_contents_names_file(tmp_path, no_system_dirs):
    make_dataset(tmp_path / "mnist")
    path = write_idx(tmp_path / "mnist" / "train-images-idx3-ubyte.gz",
                     np.zeros((3, 32, 32), np.uint8), gz=True)
    with pytest.raises(DatasetError, match="expected uint8") as info:
        data.load_dataset("mnist", data_dir=tmp_path, download=False)
    assert str(path) in str(info.value)


def test_corrupt_existing_file_is_an_error_not_replaced(tmp_path, monkeypatch):
    make_dataset(tmp_path / "mnist")
    path = tmp_path / "mnist" / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:40])
    before = path.read_bytes()
    serve_from(monkeypatch, "mnist", [tmp_path / "nowhere"], {})
    with pytest.raises(DatasetError) as info:
        data.load_dataset("mnist", data_dir=tmp_path, download=True)
    assert str(path) in str(info.value)
    assert path.read_bytes() == before


# --------------------------------------------------------------------------- search order


def test_data_dir_preferred_over_system_dir(tmp_path, monkeypatch):
    system = tmp_path / "system"
    make_dataset(system)
    src = data.SOURCES["fmnist"]
    monkeypatch.setitem(data.SOURCES, "fmnist", data._Source(
        src.title, src.mirrors, src.md5, (str(system),), src.apt_package))
    local = tmp_path / "data"
    assert data.locate("fmnist", local, download=False) == system
    make_dataset(local / "fmnist", gz=False)
    assert data.locate("fmnist", local, download=False) == local / "fmnist"


def test_mixed_gz_and_raw_files_count_as_present(tmp_path, no_system_dirs):
    folder = tmp_path / "mnist"
    make_dataset(folder, gz=True)
    raw = gzip.decompress((folder / "t10k-images-idx3-ubyte.gz").read_bytes())
    (folder / "t10k-images-idx3-ubyte.gz").unlink()
    (folder / "t10k-images-idx3-ubyte").write_bytes(raw)
    assert data.locate("mnist", tmp_path, download=False) == folder
    assert data.load_dataset("mnist", "test", tmp_path, download=False).shape == (3, 1, 28, 28)


def test_incomplete_system_dir_is_skipped(tmp_path, monkeypatch):
    system = tmp_path / "system"
    make_dataset(system)
    (system / "t10k-labels-idx1-ubyte.gz").unlink()
    src = data.SOURCES["fmnist"]
    monkeypatch.setitem(data.SOURCES, "fmnist", data._Source(
        src.title, src.mirrors, src.md5, (str(system),), src.apt_package))
    with pytest.raises(DatasetError):
        data.locate("fmnist", tmp_path / "data", download=False)


@pytest.mark.parametrize("name", data.DATASETS)
def test_missing_everything_message(tmp_path, name, no_system_dirs):
    with pytest.raises(DatasetError) as info:
        data.locate(name, tmp_path / "data", download=False)
    msg = str(info.value)
    assert str((tmp_path / "data" / data.PADDED.get(name, name)).resolve()) in msg
    for base in data.FILES:
        assert f"{base}.gz" in msg
    for mirror in data.SOURCES[data.PADDED.get(name, name)].mirrors:
        assert mirror in msg
    assert ("apt-get install -y dataset-fashion-mnist" in msg) == name.startswith("fmnist")
    assert not (tmp_path / "data").exists()  # download=False creates nothing


def test_message_lists_only_missing_files(tmp_path, no_system_dirs):
    folder = tmp_path / "mnist"
    make_dataset(folder)
    (folder / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetError) as info:
        data.locate("mnist", tmp_path, download=False)
    assert "train-labels-idx1-ubyte.gz" in str(info.value)
    assert "train-images-idx3-ubyte.gz" not in str(info.value)


# --------------------------------------------------------------------------- downloads


def test_download_fills_only_missing_files(tmp_path, monkeypatch, capsys):
    mirror = tmp_path / "mirror"
    md5 = gz_mirror(mirror)
    folder = tmp_path / "data" / "mnist"
    folder.mkdir(parents=True)
    mine = folder / "train-labels-idx1-ubyte"  # the user's own (uncompressed) copy
    mine.write_bytes(idx_bytes(np.arange(5, dtype=np.uint8)))
    mtime = mine.stat().st_mtime_ns
    serve_from(monkeypatch, "mnist", [tmp_path / "dead", mirror], md5)  # first mirror fails

    assert data.locate("mnist", tmp_path / "data") == folder
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte",
         "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"])
    assert mine.stat().st_mtime_ns == mtime
    for name in md5:
        if (folder / name).exists():
            assert (folder / name).read_bytes() == (mirror / name).read_bytes()
    assert "downloading" in capsys.readouterr().err
    x = data.load_dataset("mnist", "test", tmp_path / "data", download=False)
    assert x.shape == (3, 1, 28, 28)


def test_download_checksum_mismatch_leaves_nothing(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    md5 = gz_mirror(mirror)
    md5["t10k-images-idx3-ubyte.gz"] = "0" * 32
    folder = tmp_path / "data" / "mnist"
    folder.mkdir(parents=True)
    mine = folder / "train-images-idx3-ubyte.gz"
    write_idx(mine, tiny_images(5, 9), gz=True)
    before = mine.read_bytes()
    serve_from(monkeypatch, "mnist", [mirror, mirror], md5)

    with pytest.raises(DatasetError, match="md5") as info:
        data.locate("mnist", tmp_path / "data")
    assert "t10k-images-idx3-ubyte.gz" in str(info.value)
    assert mine.read_bytes() == before  # the user's file is untouched
    assert not (folder / "t10k-images-idx3-ubyte.gz").exists()
    assert not [p for p in folder.iterdir() if p.name.endswith(".part")]
    # files verified before the failure are kept; they are complete and correct
    assert (folder / "train-labels-idx1-ubyte.gz").read_bytes() == (
        mirror / "train-labels-idx1-ubyte.gz").read_bytes()


def test_download_interrupted_leaves_no_partial_file(tmp_path, monkeypatch):
    folder = tmp_path / "mnist"

    def broken_fetch(url, out, progress):
        out.write(b"half a file")
        raise OSError("connection reset")

    monkeypatch.setattr(download, "fetch", broken_fetch)
    with pytest.raises(DatasetError, match="connection reset"):
        data.locate("mnist", tmp_path)
    assert not folder.exists()  # no partial file, and not even the empty folder made for it


def test_download_false_never_fetches(tmp_path, monkeypatch, no_system_dirs):
    def no_fetch(*args):
        raise AssertionError("fetched with download=False")

    monkeypatch.setattr(download, "fetch", no_fetch)
    with pytest.raises(DatasetError):
        data.load_dataset("mnist", data_dir=tmp_path, download=False)


def test_real_md5_table_is_complete():
    for src in data.SOURCES.values():
        assert sorted(src.md5) == sorted(f"{b}.gz" for b in data.FILES)
        assert all(len(h) == 32 and int(h, 16) >= 0 for h in src.md5.values())


# --------------------------------------------------------------------------- real data


@pytest.mark.skipif(
    not (FMNIST_SYSTEM_DIR / "t10k-images-idx3-ubyte.gz").is_file(),
    reason=f"{FMNIST_SYSTEM_DIR} not installed (apt-get install -y dataset-fashion-mnist)",
)
def test_real_fashion_mnist_test_split(tmp_path):
    assert data.locate("fmnist", tmp_path, download=False) == FMNIST_SYSTEM_DIR
    x = data.load_dataset("fmnist", "test", data_dir=tmp_path, download=False)
    assert x.shape == (10000, 1, 28, 28) and x.dtype == np.float32
    assert x.min() == 0.0 and x.max() == 1.0
    assert 0.2 < float(x.mean()) < 0.4  # Fashion-MNIST mean intensity is about 0.286
    assert not os.listdir(tmp_path)  # nothing written to data_dir
