"""Langevin-MLE and thermodynamic objectives on a real KAEM: the KAEM as a sampler target,
finite-difference checks of both losses with the chains held fixed, loss values against
their formulas, the training steps, the CLI --mode mapping, and short training runs on
real Fashion-MNIST in each mode."""
from __future__ import annotations

import numpy as np
import pytest

import cli
from conftest import PAIR, randomise, real_fmnist, tiny_config
from gradcheck import check_grad, rel_error
from kaem.backend import get_backend
from kaem.config import load_config
from kaem.objectives import (langevin_loss_and_grad, langevin_step, objective_mode, thermo_loss_and_grad,
                           thermo_step, ti_weights, training_step)
from kaem.model import KAEM
from kaem.likelihood.posterior import KAEMPosterior
from kaem.samplers import evaluate, temperature_ladder, thermo_sample, ti_log_evidence, ula
from kaem.run.trainer import Trainer

SHAPE = (1, 2, 3)  # D = 6


def _model(be, *overrides, basis="RBF", pi0="gaussian", seed=1):
    m = KAEM(tiny_config(PAIR, *overrides, basis=basis, pi0=pi0), SHAPE, be, seed=seed)
    randomise(m, be.rng(seed + 10))
    return m


# --------------------------------------------------------------------------- the target

@pytest.mark.parametrize("basis,pi0", [("RBF", "gaussian"), ("B-spline", "gaussian"), ("FFT", "ebm"),
                                       ("RBF", "lognormal")])
def test_target_gradients_match_finite_differences(be64, basis, pi0):
    """∇_z of log p̃ and of log p(x_b(i)|z_i) vs central differences, per chain (the
    population has 2 chains per datum, so the chain -> datum map is exercised)."""
    m = _model(be64, basis=basis, pi0=pi0)
    rng = be64.rng(0)
    x = rng.random((3, m.D))
    z = m.sample_prior(6, rng)
    if pi0 == "lognormal":  # keep z inside the support (log π0 jumps to log ε at 0)
        z = np.abs(z) + 0.2
    t = KAEMPosterior(m, x)
    for name, fn in (("log_prior", t.log_prior), ("log_lik", t.log_lik)):
        _, grad = fn(z)
        check_grad(lambda: fn(z)[0].sum(), z, grad, tol=1e-6, name=f"{name} {basis} {pi0}")


def test_ula_run_spares_the_last_gradients_and_changes_no_value(be64):
    """``last="ll"`` evaluates only the likelihood at the final state (the KAEM target's
    ``log_lik_value``: no backward, no prior) and ``last="none"`` nothing; z and ll are those
    of the full run to the bit."""
    from kaem.samplers.ula import ula_run

    m = _model(be64)
    rng = be64.rng(5)
    x, z0 = rng.random((3, m.D)), m.sample_prior(6, rng)
    t = KAEMPosterior(m, x)
    np.testing.assert_array_equal(t.log_lik_value(z0), t.log_lik(z0)[0])
    runs = {last: ula_run(t, z0, 0.7, 1e-3, 4, be64.rng(6), last=last) for last in ("full", "ll", "none")}
    for last in ("ll", "none"):
        np.testing.assert_array_equal(runs[last][0], runs["full"][0])
    ev = runs["ll"][1]
    np.testing.assert_array_equal(ev.ll, runs["full"][1].ll)
    assert ev.lp is None and ev.glp is None and ev.gll is None and runs["none"][1] is None
    with pytest.raises(ValueError, match="valid: full, ll, none"):
        ula_run(t, z0, 0.7, 1e-3, 1, rng, last="grad")


def test_target_values_and_chain_to_datum_map(be64):
    m = _model(be64)
    rng = be64.rng(1)
    x = rng.random((3, m.D))
    z = m.sample_prior(9, rng)
    t = KAEMPosterior(m, x)
    lp, _ = t.log_prior(z)
    np.testing.assert_allclose(lp, m.prior.log_unnorm(z, cache=False), rtol=1e-12)
    ll, _ = t.log_lik(z)
    dens = m.lik.log_density_matrix(x, m.generator.forward(z.sum(axis=2), cache=False))  # (B, N)
    want = dens[np.arange(9) % 3, np.arange(9)] - m.lik.log_norm_const(m.D)
    np.testing.assert_allclose(ll, want, rtol=1e-10)
    with pytest.raises(ValueError, match="multiple"):
        t.log_lik(z[:4])


@pytest.mark.parametrize("basis", ["RBF", "B-spline", "Cheby"])
def test_sampler_prior_gradient_equals_library_backward(be64, basis):
    """``log_unnorm_and_grad`` (the sampler's path) against log_unnorm + log_unnorm_backward."""
    m = _model(be64, basis=basis)
    z = m.sample_prior(7, be64.rng(2))
    lp, gz = m.prior.log_unnorm_and_grad(z)
    lp_ref = m.prior.log_unnorm(z)
    gz_ref = m.prior.log_unnorm_backward(np.ones(7), need_dz=True)
    np.testing.assert_allclose(lp, lp_ref, rtol=1e-12)
    assert rel_error(gz, gz_ref) < 1e-12


def test_sampler_leaves_parameter_gradients_of_the_loss_unchanged(be64):
    """Sampling between two loss evaluations changes none of the parameter gradients."""
    m = _model(be64, "TRAINING.contrastive_divergence_training=false")
    rng = be64.rng(3)
    x, z = rng.random((2, m.D)), m.sample_prior(2, rng)
    noise = rng.standard_normal((2, m.D))
    langevin_loss_and_grad(m, x, z, exact_logZ=True, noise=noise)
    cold = {k: v.copy() for k, v in m.gradients().items()}
    ula(KAEMPosterior(m, x), z, 1.0, 1e-3, 3, rng)
    langevin_loss_and_grad(m, x, z, exact_logZ=True, noise=noise)
    for k, v in m.gradients().items():
        np.testing.assert_array_equal(v, cold[k])


def test_ula_on_the_kaem_target_raises_the_likelihood(be64):
    """A posterior sampler started at the prior must climb the likelihood of its datum."""
    m = _model(be64)
    rng = be64.rng(4)
    x = rng.random((4, m.D))
    t = KAEMPosterior(m, x)
    z0 = m.sample_prior(40, rng)
    z = ula(t, z0, 1.0, 1e-3, 100, rng)
    assert float(evaluate(t, z).ll.mean()) > float(evaluate(t, z0).ll.mean()) + 1.0


# --------------------------------------------------------------------------- losses: FD

def _check_all_params(m, loss, tol=1e-6):
    loss()
    grads = {k: v.copy() for k, v in m.gradients().items()}
    for name, p in m.parameters().items():
        check_grad(loss, p, grads[name], tol=tol, name=name)


@pytest.mark.parametrize("cd", [True, False], ids=["contrastive", "exact-logZ"])
@pytest.mark.parametrize("basis", ["RBF", "B-spline"])
def test_langevin_loss_gradient(be64, cd, basis):
    """Every parameter, chains (2 per datum), CD draws and injection noise held fixed."""
    m = _model(be64, basis=basis)
    rng = be64.rng(5)
    B = 3
    x, z = rng.random((B, m.D)), m.sample_prior(2 * B, rng)
    z_cd = m.sample_prior(4, rng) if cd else None
    noise = rng.standard_normal((2 * B, m.D))
    _check_all_params(m, lambda: langevin_loss_and_grad(m, x, z, z_cd=z_cd, exact_logZ=not cd, noise=noise)[0])


@pytest.mark.parametrize("rule", ["left", "trapezoid", "right"])
@pytest.mark.parametrize("cd", [True, False], ids=["contrastive", "exact-logZ"])
def test_thermo_loss_gradient(be64, rule, cd):
    m = _model(be64)
    rng = be64.rng(6)
    B, temps = 3, temperature_ladder(3, 2.0)
    x = rng.random((B, m.D))
    z = m.sample_prior(4 * B, rng).reshape(4, B, *m.prior.latent_shape)
    z_cd = z[0] if cd else None
    noise = rng.standard_normal((4, B, m.D))
    _check_all_params(m, lambda: thermo_loss_and_grad(m, x, z, temps, rule, z_cd=z_cd, exact_logZ=not cd,
                                                      noise=noise)[0])


# --------------------------------------------------------------------------- losses: values

def test_langevin_loss_value(be64):
    m = _model(be64)
    rng = be64.rng(7)
    x, z, zc = rng.random((2, m.D)), m.sample_prior(4, rng), m.sample_prior(5, rng)
    noise = rng.standard_normal((4, m.D))
    loss, ll = langevin_loss_and_grad(m, x, z, z_cd=zc, noise=noise)
    g = m.generator.forward(z.sum(axis=2), cache=False)
    y = 1 / (1 + np.exp(-(g + m.lik.noise * noise)))
    want_ll = -((x[np.arange(4) % 2] - y) ** 2).sum(1) / (2 * m.lik.sigma ** 2)
    np.testing.assert_allclose(ll, want_ll, rtol=1e-12)
    lp, lpc = m.prior.log_unnorm(z, cache=False), m.prior.log_unnorm(zc, cache=False)
    want = -(lp + want_ll).mean() + lpc.mean()
    assert abs(float(loss) - want) < 1e-10 * abs(want)
    loss_x, _ = langevin_loss_and_grad(m, x, z, exact_logZ=True, noise=noise)
    want_x = -(lp + want_ll).mean() + m.prior.log_Z(cache=False).sum()
    assert abs(float(loss_x) - want_x) < 1e-10 * abs(want_x)


@pytest.mark.parametrize("rule", ["left", "trapezoid", "right"])
def test_thermo_loss_value_counts_each_interval_once(be64, rule):
    """loss = −mean_b TI_b(ll) − mean log p̃(z_t=1) + CD, TI the sampler library's estimator
    (left sum / trapezoid over the ladder, method §7.4: no doubled first interval)."""
    m = _model(be64)
    rng = be64.rng(8)
    B, temps = 2, temperature_ladder(4, 3.0)
    x = rng.random((B, m.D))
    z = m.sample_prior(5 * B, rng).reshape(5, B, *m.prior.latent_shape)
    noise = rng.standard_normal((5, B, m.D))
    loss, ll = thermo_loss_and_grad(m, x, z, temps, rule, z_cd=z[0], noise=noise)
    g = m.generator.forward(z.reshape(-1, *m.prior.latent_shape).sum(axis=2), cache=False)
    y = 1 / (1 + np.exp(-(g + m.lik.noise * noise.reshape(-1, m.D))))
    ll_all = (-((np.tile(x, (5, 1)) - y) ** 2).sum(1) / (2 * m.lik.sigma ** 2)).reshape(5, B)
    used = ~np.isnan(ll)
    np.testing.assert_allclose(ll[used], ll_all[used], rtol=1e-12)
    assert used[1:-1].all() and (used[0].all() == (rule != "right")) and (used[-1].all() == (rule != "left"))
    lp_top = m.prior.log_unnorm(z[-1], cache=False)
    lp_cd = m.prior.log_unnorm(z[0], cache=False)
    want = -ti_log_evidence(ll_all, temps, rule).mean() - lp_top.mean() + lp_cd.mean()
    assert abs(float(loss) - want) < 1e-10 * abs(want)


def test_ti_weights():
    temps = temperature_ladder(5, 2.5)
    for rule in ("left", "trapezoid", "right"):
        c = ti_weights(temps, rule)
        assert abs(c.sum() - 1.0) < 1e-14  # ∫_0^1 dt, each interval once
        ll = np.random.default_rng(0).standard_normal((6, 3))
        np.testing.assert_allclose(c @ ll, ti_log_evidence(ll, temps, rule), rtol=1e-12)
    assert ti_weights(temps, "left")[-1] == 0.0 and ti_weights(temps, "right")[0] == 0.0
    np.testing.assert_allclose(ti_weights(temps, "right")[1:], np.diff(temps), rtol=1e-12)
    with pytest.raises(ValueError, match="integration_rule"):
        ti_weights(temps, "simpson")


def test_exactly_one_prior_term_is_required(be64):
    m = _model(be64)
    x, z = np.zeros((1, m.D)), m.sample_prior(1, be64.rng(0))
    with pytest.raises(ValueError, match="exactly one"):
        langevin_loss_and_grad(m, x, z)
    with pytest.raises(ValueError, match="exactly one"):
        langevin_loss_and_grad(m, x, z, z_cd=z, exact_logZ=True)


# --------------------------------------------------------------------------- steps

MODE_SETS = {
    "is": [],
    "ula": ["POST_LANGEVIN.use_langevin=true"],
    "automala": ["POST_LANGEVIN.use_langevin=true", "POST_LANGEVIN.use_autoMALA=true"],
    "thermo": ["THERMODYNAMIC_INTEGRATION.num_temps=4"],
    "thermo-automala": ["THERMODYNAMIC_INTEGRATION.num_temps=4", "POST_LANGEVIN.use_autoMALA=true"],
}


@pytest.mark.parametrize("name", sorted(MODE_SETS))
@pytest.mark.parametrize("cd", [True, False], ids=["contrastive", "exact-logZ"])
def test_training_step_contract(be64, name, cd):
    """(loss, diag) like is_step: finite loss and gradients, diag["z"] (n, Q, P) with
    weights diag["w"] (R, n) whose column means sum to 1, sampler diagnostics; autoMALA's
    adapted step sizes carried in the state."""
    m = _model(be64, *MODE_SETS[name], f"TRAINING.contrastive_divergence_training={str(cd).lower()}",
               "TRAINING.importance_sample_size=8", "POST_LANGEVIN.iters=4",
               "THERMODYNAMIC_INTEGRATION.N_langevin_per_temp=3")
    assert objective_mode(m.cfg) == name.split("-")[0]
    rng = be64.rng(9)
    x = rng.random((5, m.D))
    state: dict = {}
    for i in range(2):
        loss, diag = training_step(m, x, rng, iteration=i, n_updates=10, state=state)
        assert np.isfinite(float(loss))
        assert all(np.isfinite(g).all() for g in m.gradients().values())
        assert any(np.abs(g).sum() > 0 for g in m.gradients().values())
    z, w = diag["z"], diag["w"]
    assert z.ndim == 3 and z.shape[1:] == m.prior.latent_shape and w.shape[1] == z.shape[0]
    assert abs(float(w.mean(axis=0).sum()) - 1.0) < 1e-12
    if name == "is":
        return
    assert z.shape[0] == 5 and np.isfinite(diag["step"]) and diag["step"] > 0
    if "automala" in name:
        assert 0.0 <= diag["accept"] <= 1.0
        n_rungs = 4 if name.startswith("thermo") else 1
        lo, hi = m.cfg["POST_LANGEVIN"]["step_size_bounds"]
        assert len(state["step_size"]) == n_rungs and all(lo <= s <= hi for s in state["step_size"])
    else:
        assert np.isnan(diag["accept"]) and state == {}
    if name.startswith("thermo"):
        assert 0.0 <= diag["swap"] <= 1.0
        assert 1.0 <= diag["p"] <= 10.0
    else:
        assert np.isnan(diag["swap"])


def test_thermo_step_uses_the_scheduled_ladder_and_the_t1_chains(be64, monkeypatch):
    """thermo_sample gets rungs t_1..t_N of (k/N)^p(i) (rung 0 is exact prior samples) and
    diag["z"] is the t = 1 rung of its output."""
    import kaem.objectives.thermodynamic as lv
    from kaem.samplers import p_schedule

    m = _model(be64, "THERMODYNAMIC_INTEGRATION.num_temps=3", "THERMODYNAMIC_INTEGRATION.p_start=4",
               "THERMODYNAMIC_INTEGRATION.p_end=1", "THERMODYNAMIC_INTEGRATION.N_langevin_per_temp=2")
    seen = {}

    def spy(target, z, temps, *a, **k):
        seen["temps"], seen["n"] = list(temps), z.shape[0]
        out = thermo_sample(target, z, temps, *a, **k)
        seen["top"] = out[0][-2:].copy()
        return out

    monkeypatch.setattr(lv, "thermo_sample", spy)
    rng = be64.rng(10)
    _, diag = thermo_step(m, rng.random((2, m.D)), rng, iteration=3, n_updates=8)
    p = p_schedule(3, 8, 4.0, 1.0, 0)
    np.testing.assert_allclose(seen["temps"], [(k / 3) ** p for k in (1, 2, 3)])
    assert seen["n"] == 6 and diag["p"] == p
    np.testing.assert_array_equal(diag["z"], seen["top"])


def test_langevin_step_automala_state_round_trip(be64):
    m = _model(be64, *MODE_SETS["automala"], "POST_LANGEVIN.iters=5")
    rng = be64.rng(11)
    x = rng.random((3, m.D))
    state = {"step_size": [0.05]}
    langevin_step(m, x, rng, state)
    assert state["step_size"] != [0.05] and len(state["step_size"]) == 1


# --------------------------------------------------------------------------- CLI --mode

@pytest.mark.parametrize("mode", ["is", "ula", "automala", "thermo"])
def test_cli_mode_maps_to_config_keys(mode):
    cfg = load_config("mnist", overrides=cli.mode_overrides(mode, 1))
    assert objective_mode(cfg) == mode
    if mode == "thermo":
        assert cfg["THERMODYNAMIC_INTEGRATION"]["num_temps"] == 5
        assert cli.mode_overrides("thermo", 8) == []  # a configured ladder is kept
    if mode == "automala":
        assert cfg["POST_LANGEVIN"]["use_langevin"] and cfg["POST_LANGEVIN"]["use_autoMALA"]
    # a config that selects thermo is brought back by --mode is/ula/automala
    base = load_config("mnist", overrides=["THERMODYNAMIC_INTEGRATION.num_temps=6"])
    cfg2 = load_config("mnist", overrides=["THERMODYNAMIC_INTEGRATION.num_temps=6"]
                       + cli.mode_overrides(mode, base["THERMODYNAMIC_INTEGRATION"]["num_temps"]))
    assert objective_mode(cfg2) == mode


def test_cli_train_mode_end_to_end(tmp_path, capsys):
    """--mode thermo on a tiny random dataset: the CSV has the sampler columns; a --set that
    contradicts --mode is refused; --resume with another --mode is refused."""
    import csv
    import gzip
    import struct

    folder = tmp_path / "data" / "fmnist"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def idx(path, arr):
        with gzip.open(path, "wb") as fh:
            fh.write(struct.pack(">BBBB", 0, 0, 8, arr.ndim) + b"".join(struct.pack(">I", d) for d in arr.shape)
                     + arr.astype(np.uint8).tobytes())

    for prefix, n in (("train", 40), ("t10k", 20)):
        idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        idx(folder / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))
    tiny = ["--set", "EbmModel.layer_widths=3,7", "--set", "GeneratorModel.widths=7,8",
            "--set", "EbmModel.grid_size=5", "--set", "GeneratorModel.grid_size=5",
            "--set", "TRAINING.eval_importance_samples=20", "--set", "THERMODYNAMIC_INTEGRATION.N_langevin_per_temp=2"]
    common = ["train", "--dataset", "fmnist", "--data-dir", str(tmp_path / "data"), "--no-download",
              "--n-train", "40", "--n-test", "20", "--batch-size", "20", "--epochs", "1", "--log-every", "1"]
    out = tmp_path / "run"
    assert cli.main(common + ["--mode", "thermo", "--out", str(out)] + tiny) == 0
    err = capsys.readouterr().err
    assert "objective thermo" in err and "swap" in err
    with open(out / "log.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert 0 <= float(rows[-1]["swap_rate"]) <= 1 and float(rows[-1]["mean_step"]) > 0
    assert rows[-1]["ess_mean"] == "" and rows[-1]["accept_rate"] == ""
    assert cli.main(common + ["--mode", "ula", "--out", str(tmp_path / "bad")] + tiny
                    + ["--set", "THERMODYNAMIC_INTEGRATION.num_temps=3"]) == 2
    assert "conflicts" in capsys.readouterr().err
    assert cli.main(["train", "--resume", str(out / "ckpt.npz"), "--mode", "is", "--data-dir",
                     str(tmp_path / "data"), "--no-download", "--epochs", "2"]) == 2
    assert "differs" in capsys.readouterr().err


# --------------------------------------------------------------------------- real data

# A smaller KAEM than the MNIST architecture so that each mode trains in well under 40 s on
# 2 cores: P=10, Q=21, generator 21->42->784 (RBF, G=20), batch 50, 300 test images scored
# with S=300 prior samples; grids updated every 10 iterations (exercises grid updating from
# the chains). autoMALA costs ~8 target evaluations per iteration, so it runs 10 iterations
# per chain and 20 training iterations.
SMALL = ["EbmModel.layer_widths=10,21", "GeneratorModel.widths=21,42", "TRAINING.batch_size=50",
         "TRAINING.eval_importance_samples=300", "GRID_UPDATING.grid_update_frequency=10"]
TRAIN_MODES = {
    "ula": (1500, ["POST_LANGEVIN.use_langevin=true"]),
    "automala": (1000, ["POST_LANGEVIN.use_langevin=true", "POST_LANGEVIN.use_autoMALA=true",
                        "POST_LANGEVIN.iters=10"]),
    "thermo": (1500, ["THERMODYNAMIC_INTEGRATION.num_temps=5"]),
}


@pytest.mark.parametrize("mode", sorted(TRAIN_MODES))
def test_short_training_on_real_fmnist_in_each_mode(tmp_path, mode):
    """One epoch (30 iterations; 20 for autoMALA) on real images. The held-out estimate on the
    same 300 test images with the same prior draws (fixed evaluation seed) must rise by far
    more than the estimator's spread (the untrained model is thousands of nats lower), the
    run must stay finite, and the sampler columns must be filled."""
    n_train, extra = TRAIN_MODES[mode]
    x_train, x_test = real_fmnist(n_train, 300)
    be = get_backend("cpu", "float32")
    model = KAEM(load_config("fmnist", overrides=SMALL + extra), (1, 28, 28), be, seed=0)
    assert objective_mode(model.cfg) == mode
    tr = Trainer(model, be, x_train, x_test, str(tmp_path), seed=0, dataset="fmnist", log=lambda m: None)
    before = tr.evaluate()["loglik_nats"]
    rows = tr.run(epochs=1)
    last = rows[-1]
    assert np.isfinite(last["train_loss"]) and np.isfinite(last["heldout_loglik_nats"])
    assert all(np.isfinite(p).all() for p in model.parameters().values())
    assert last["heldout_loglik_nats"] > before + 100, (before, last["heldout_loglik_nats"])
    assert last["mean_step"] > 0 and last["grid_updated"] >= 1
    if mode == "automala":
        assert 0 < last["accept_rate"] <= 1
    if mode == "thermo":
        assert 0 < last["swap_rate"] <= 1
