"""Shared fixtures: float64 CPU backend and tiny KAEM configs for gradient checks."""
from __future__ import annotations

import gzip
import os
import struct
import sys

# Single-threaded BLAS for the tests (set before numpy loads): their arrays are small, and on a
# shared or busy machine OpenBLAS's spinning worker threads cost more than they bring.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # `from gradcheck import ...`
sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))  # `import cli`

from kaem.backend import get_backend  # noqa: E402
from kaem.config import load_config  # noqa: E402


@pytest.fixture
def be64():
    return get_backend("cpu", "float64")


def tiny_config(*overrides: str, basis: str = "RBF", pi0: str = "gaussian", act: str = "silu"):
    """A small KAEM config (P=3, Q=4, generator 4->5->D, G=5) for exhaustive FD checks."""
    base = [
        "EbmModel.layer_widths=3,4", "GeneratorModel.widths=4,5",
        "EbmModel.grid_size=5", "GeneratorModel.grid_size=5",
        f"EbmModel.spline_function={basis}", f"GeneratorModel.spline_function={basis}",
        f"EbmModel.base_activation={act}", f"GeneratorModel.base_activation={act}",
        f"EbmModel.π_0={pi0}", "TRAINING.dtype=float64",
    ]
    return load_config("mnist", overrides=base + list(overrides))


# for tests that pass the per-(datum, sample) injection noise ξ themselves ((B, S, D), (N, D)):
# the reference's sharing, no longer the default (tests/test_noise_sharing.py covers `sample`)
PAIR = "GeneratorModel.noise_sharing=pair"


# the smallest CLI training run (P=2, Q=3, generator 3->4->D, G=3): for fault-injection tests
TINY_CLI = ["--set", "EbmModel.layer_widths=2,3", "--set", "GeneratorModel.widths=3,4",
            "--set", "EbmModel.grid_size=3", "--set", "GeneratorModel.grid_size=3",
            "--set", "TRAINING.importance_sample_size=10", "--set", "TRAINING.eval_importance_samples=20"]


def randomise(model, rng, scale: float = 0.3) -> None:
    """Move every parameter away from its initialisation (non-trivial FD checks)."""
    for p in model.parameters().values():
        p += scale * rng.standard_normal(p.shape)


def randomise_kan(params, seed: int, base_std: float = 0.5) -> None:
    """A KAN layer's (or prior's) parameters far from their tiny initialisation, in place:
    w_base ~ N(0, base_std), w_sp = ±U(0.5, 1.5), coef ~ N(0, 1), tau ~ U(0.8, 1.6)."""
    r = np.random.default_rng(seed)
    params["w_base"][...] = r.normal(0.0, base_std, params["w_base"].shape)
    params["w_sp"][...] = r.uniform(0.5, 1.5, params["w_sp"].shape) * r.choice([-1.0, 1.0], params["w_sp"].shape)
    params["coef"][...] = r.normal(0.0, 1.0, params["coef"].shape)
    if "tau" in params:
        params["tau"][...] = r.uniform(0.8, 1.6)


def _write_idx(path, arr):
    header = struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + b"".join(struct.pack(">I", d) for d in arr.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + arr.astype(np.uint8).tobytes())


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """A 'fmnist' folder of blurry random blobs in IDX format (the real layout)."""
    root = tmp_path_factory.mktemp("data")
    folder = root / "fmnist"
    folder.mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:28, :28]
    for prefix, n in (("train", 200), ("t10k", 60)):
        cy, cx = rng.uniform(8, 20, (2, n, 1, 1))
        img = 255 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 30.0)
        _write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", img)
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))
    return str(root)


def real_fmnist(n_train: int, n_test: int):
    """The first n_train / n_test real Fashion-MNIST images, or skip the test saying how to
    get them (Debian's dataset-fashion-mnist, or the IDX files in data/fmnist/)."""
    from kaem.datasets import DatasetError, load_dataset

    try:
        return (load_dataset("fmnist", "train", "data", download=False, n=n_train),
                load_dataset("fmnist", "test", "data", download=False, n=n_test))
    except DatasetError as e:
        pytest.skip(f"real Fashion-MNIST not available (apt-get install dataset-fashion-mnist, or put the "
                    f"IDX files in data/fmnist/): {e}")


def one_error_line(capsys, *needles: str) -> str:
    """The one stderr line a failing command printed: "error: ...", no internal error or
    traceback, holding every needle."""
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert "internal error" not in err[0] and "Traceback" not in err[0], err
    for n in needles:
        assert n in err[0], (n, err)
    return err[0]
