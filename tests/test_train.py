"""Training on real Fashion-MNIST improves the held-out log-likelihood; NaN handling."""
from __future__ import annotations

import os

import numpy as np
import pytest

from conftest import real_fmnist, tiny_config
from kaem.backend import get_backend
from kaem.config import load_config
from kaem.model import KAEM
from kaem.run.trainer import Trainer, TrainingError


def test_short_training_on_real_fmnist_raises_heldout_loglik(tmp_path):
    """2 000 real images, the MNIST architecture (P=20, Q=41, 41->82->784, RBF), 40 IS
    iterations. The held-out estimate on the same 500 test images with the same prior
    draws (fixed evaluation seed) must rise; the untrained model scores thousands of
    nats lower, far beyond the estimator's spread."""
    x_train, x_test = real_fmnist(2000, 500)
    be = get_backend("cpu", "float32")
    cfg = load_config("fmnist", overrides=["TRAINING.eval_importance_samples=500"])
    model = KAEM(cfg, (1, 28, 28), be, seed=0)
    tr = Trainer(model, be, x_train, x_test, str(tmp_path), seed=0, dataset="fmnist", log=lambda m: None)
    before = tr.evaluate()["loglik_nats"]
    rows = tr.run(epochs=2)
    after = rows[-1]["heldout_loglik_nats"]
    assert np.isfinite(after) and after > before + 100, (before, after)
    assert rows[-1]["train_loss"] < rows[1]["train_loss"]


@pytest.mark.filterwarnings("ignore:invalid value encountered")
def test_nan_stops_training_and_saves_last_good_state(tmp_path, be64):
    """last_good.npz holds the parameters of the last finite forward pass: those before
    the final update of the first run (the NaN is planted after it), not the NaN ones."""
    cfg = tiny_config()
    model = KAEM(cfg, (1, 2, 3), be64, seed=0)
    rng = np.random.default_rng(0)
    x = rng.random((20, 6))
    tr = Trainer(model, be64, x, x[:5], str(tmp_path), log=lambda m: None)
    tr.run(epochs=1, max_iters=tr.iters_per_epoch - 1)
    good = {k: v.copy() for k, v in model.parameters().items()}
    tr.run(epochs=1)  # one more (finite) step
    model.prior.layer.params["coef"][0, 0, 0] = np.nan
    with pytest.raises(TrainingError, match="non-finite loss"):
        tr.run(epochs=2)
    from kaem.run.checkpoint import load_checkpoint

    saved = load_checkpoint(os.path.join(tmp_path, "last_good.npz"))
    assert saved["meta"]["iteration"] == tr.iters_per_epoch - 1 and saved["meta"]["last_good"]
    for k, v in good.items():
        np.testing.assert_array_equal(saved["params"][k], v)
    assert load_checkpoint(os.path.join(tmp_path, "ckpt.npz"))["meta"]["iteration"] == tr.iters_per_epoch


def test_slow_iterations_still_show_progress(tmp_path, be64, monkeypatch):
    """A progress line at least every PROGRESS_EVERY_S, whatever --log-every says; slow
    iterations read as seconds per iteration."""
    import kaem.run.trainer

    model = KAEM(tiny_config(), (1, 2, 3), be64, seed=0)
    x = np.random.default_rng(0).random((20, 6))
    lines = []
    tr = Trainer(model, be64, x, x[:5], str(tmp_path), log=lines.append)
    monkeypatch.setattr(kaem.run.trainer, "PROGRESS_EVERY_S", 0.0)
    tr.run(epochs=1, log_every=1000)
    progress = [m for m in lines if m.startswith("it ")]
    assert [m.split()[1] for m in progress] == [f"{i}/{tr.iters_per_epoch}" for i in range(1, tr.iters_per_epoch + 1)]
    assert all(" it/s " in m or " s/it " in m for m in progress)
