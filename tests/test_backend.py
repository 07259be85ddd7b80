"""Device selection: gpu without cupy/CUDA fails at once with install instructions."""
from __future__ import annotations

import numpy as np
import pytest

import cli
from kaem import backend
from kaem.backend import BackendError, get_backend


def test_cpu_backend_dtypes():
    assert get_backend("cpu").dtype == np.float32
    be = get_backend("cpu", "float64")
    assert be.xp is np and be.dtype == np.float64 and be.asarray([1, 2]).dtype == np.float64


def test_gpu_without_cupy_fails_with_instructions(monkeypatch):
    monkeypatch.setattr(backend, "_cupy_or_none", lambda: None)
    with pytest.raises(BackendError, match=r"\[gpu\]"):
        get_backend("gpu")
    assert get_backend("auto").device == "cpu"


def test_bad_device_and_dtype_list_valid_ones():
    with pytest.raises(BackendError, match="cpu, gpu, auto"):
        get_backend("tpu")
    with pytest.raises(BackendError, match="float32, float64"):
        get_backend("cpu", "float16")


def test_cli_gpu_without_cupy_exits_nonzero(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(backend, "_cupy_or_none", lambda: None)
    code = cli.main(["train", "--dataset", "fmnist", "--device", "gpu", "--out", str(tmp_path)])
    assert code == 1 and "cupy" in capsys.readouterr().err


def test_seeded_generators_are_independent_of_global_state():
    be = get_backend("cpu")
    np.random.seed(1)
    a = be.rng(5).random(3)
    np.random.seed(2)
    np.testing.assert_array_equal(a, be.rng(5).random(3))
