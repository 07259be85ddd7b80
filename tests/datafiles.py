"""Writers of tiny dataset files in each real on-disk format, for the loader tests and for
anyone who needs a dataset folder without downloads (``from datafiles import ...``; the
tests folder is on sys.path via conftest.py).

Every writer puts its files where ``kaem.datasets`` looks for them under ``root`` (the
``data_dir``) and returns the uint8 pixels it wrote, (n, C, H, W) per split, so that a test
can compare what the loader returns with what went in.
"""
from __future__ import annotations

import io
import pathlib
import tarfile
import zipfile

import numpy as np


def random_pixels(n: int, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Smooth-ish random uint8 images (n, *shape): a random base colour plus noise."""
    rng = np.random.default_rng(seed)
    base = rng.integers(40, 216, (n,) + shape[:1] + (1,) * (len(shape) - 1))
    return np.clip(base + rng.integers(-40, 41, (n,) + shape), 0, 255).astype(np.uint8)


def write_svhn(root: pathlib.Path, n_train: int = 6, n_test: int = 4) -> dict[str, np.ndarray]:
    """``root/svhn/{train,test}_32x32.mat``: MATLAB v5 files with X (32, 32, 3, n) uint8 and
    y (n, 1), as the official files."""
    from scipy.io import savemat

    folder = pathlib.Path(root) / "svhn"
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, n, seed in (("train", n_train, 1), ("test", n_test, 2)):
        x = random_pixels(n, (3, 32, 32), seed)
        savemat(folder / f"{split}_32x32.mat", {"X": x.transpose(2, 3, 1, 0), "y": np.ones((n, 1), np.uint8)})
        out[split] = x
    return out


def cifar_batch_bytes(x: np.ndarray, seed: int = 0) -> bytes:
    """The binary CIFAR-10 records of uint8 images (n, 3, 32, 32): a label byte (0..9), then
    the R, G and B planes."""
    labels = np.random.default_rng(seed).integers(0, 10, (x.shape[0], 1), dtype=np.uint8)
    return np.concatenate([labels, x.reshape(x.shape[0], -1)], axis=1).tobytes()


CIFAR_TRAIN_BATCHES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))


def write_cifar10(root: pathlib.Path, per_batch: int = 3, n_test: int = 4, archive: bool = False) -> dict[str, np.ndarray]:
    """``root/cifar10/cifar-10-batches-bin/`` with the five train batches (``per_batch``
    images each) and ``test_batch.bin``; with ``archive``, ``cifar-10-binary.tar.gz``
    holding them instead (plus batches.meta.txt, as the official archive)."""
    members = {}
    train = []
    for i, name in enumerate(CIFAR_TRAIN_BATCHES):
        x = random_pixels(per_batch, (3, 32, 32), 10 + i)
        train.append(x)
        members[name] = cifar_batch_bytes(x, i)
    test = random_pixels(n_test, (3, 32, 32), 20)
    members["test_batch.bin"] = cifar_batch_bytes(test, 9)
    members["batches.meta.txt"] = b"airplane\nautomobile\n"
    folder = pathlib.Path(root) / "cifar10"
    folder.mkdir(parents=True, exist_ok=True)
    if archive:
        write_tar_gz(folder / "cifar-10-binary.tar.gz", {f"cifar-10-batches-bin/{k}": v for k, v in members.items()})
    else:
        (folder / "cifar-10-batches-bin").mkdir(exist_ok=True)
        for name, raw in members.items():
            (folder / "cifar-10-batches-bin" / name).write_bytes(raw)
    return {"train": np.concatenate(train), "test": test}


def write_tar_gz(path: pathlib.Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, raw in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))


# official CelebA image numbers: train 1..162770, validation 162771..182637, test 182638..202599
CELEBA_TRAIN_FIRST, CELEBA_VAL_FIRST, CELEBA_TEST_FIRST = 1, 162771, 182638


def celeba_jpeg(rgb: np.ndarray, quality: int = 95) -> bytes:
    """JPEG bytes of one uint8 (H, W, 3) image."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def celeba_face(seed: int, w: int = 36, h: int = 44) -> np.ndarray:
    """A (h, w, 3) test picture with CelebA's aspect: a flat random colour in the centre
    square and pure red bands above and below it (what the centre crop must remove)."""
    rgb = np.empty((h, w, 3), np.uint8)
    rgb[:] = np.random.default_rng(seed).integers(30, 200, 3)
    band = (h - w) // 2
    rgb[:band] = rgb[h - band:] = (255, 0, 0)
    return rgb


def write_celeba(root: pathlib.Path, n_train: int = 5, n_test: int = 3, n_val: int = 2,
                 archive: bool = False, size: tuple[int, int] = (36, 44)) -> dict[str, list[str]]:
    """``root/celeba/img_align_celeba/NNNNNN.jpg`` (or ``img_align_celeba.zip``) with
    official file numbers per split; returns the file names per split (in order)."""
    names = {"train": [f"{CELEBA_TRAIN_FIRST + i:06d}.jpg" for i in range(n_train)],
             "val": [f"{CELEBA_VAL_FIRST + i:06d}.jpg" for i in range(n_val)],
             "test": [f"{CELEBA_TEST_FIRST + i:06d}.jpg" for i in range(n_test)]}
    files = {name: celeba_jpeg(celeba_face(int(name[:6]), *size)) for group in names.values() for name in group}
    folder = pathlib.Path(root) / "celeba"
    folder.mkdir(parents=True, exist_ok=True)
    if archive:
        with zipfile.ZipFile(folder / "img_align_celeba.zip", "w") as zf:
            for name, raw in files.items():
                zf.writestr(f"img_align_celeba/{name}", raw)
    else:
        (folder / "img_align_celeba").mkdir(exist_ok=True)
        for name, raw in files.items():
            (folder / "img_align_celeba" / name).write_bytes(raw)
    return names
