"""Prior-density plots (kaem/plots/priors.py) and ``cli.py plot-prior``: the plotted curves are
normalised densities, the PNG has the size its panel layout implies, and the command runs
end to end on a tiny checkpoint and rejects an out-of-range q with the valid range."""
from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import randomise, tiny_config
from PIL import Image

import cli
from kaem.model import KAEM
from kaem.plots import (HEADER_H, LINE_H, PANEL_SIZE, Series, canvas, nice_ticks, panel, pi0_density_curves,
                        prior_density_curves, prior_density_grid, save_image, wrap_text)
from test_cli import TINY


def _prior(be64, pi0, basis="RBF", scale=0.5):
    model = KAEM(tiny_config(basis=basis, pi0=pi0), (1, 4, 4), be64, seed=1)
    randomise(model, np.random.default_rng(2), scale=scale)  # curved, non-trivial densities
    return model.prior


def _trapezoid_with_bound(z, d):
    """∫ d dz by the trapezoid rule, and its error bound (b − a)/12 · h² · max|d''| with
    d'' estimated by second differences on the same grid (|Δ²d| / h²)."""
    h = z[1] - z[0]
    integral = h * (d.sum(axis=0) - 0.5 * (d[0] + d[-1]))
    d2 = np.abs(np.diff(d, 2, axis=0)).max(axis=0)  # ≈ h² · max|d''|
    return integral, (z[-1] - z[0]) / 12 * d2


@pytest.mark.parametrize("pi0,basis,scale", [("gaussian", "RBF", 0.5), ("ebm", "RBF", 0.5), ("lognormal", "RBF", 0.5),
                                             ("uniform", "FFT", 0.2), ("gaussian", "FFT", 0.1)])
def test_density_curves_integrate_to_one(be64, pi0, basis, scale):
    """The trapezoid rule on n points errs by at most (b−a) h² max|π''| / 12. The Z in the
    density comes from 100-node Gauss–Legendre, which for these priors agrees with a
    4000-node rule to < 1e-5 relative. So |∫ − 1| must stay within the grid bound (×2 for
    estimating π'' by second differences, + 1e-5 for Z), and shrink ~4× when the grid is
    twice as fine. (Strongly perturbed FFT priors are left out: there the 100-node Z itself
    is off by up to 5%, which the curve would show as an integral ≠ 1.)"""
    prior = _prior(be64, pi0, basis, scale)
    qs, ps = [0, 1, 3], [0, 2]
    errs = []
    for n in (200, 400):
        z, dens = prior_density_curves(prior, qs, ps, n)
        assert z.shape == (n, 2) and dens.shape == (n, 3, 2)
        assert np.all(np.isfinite(dens)) and dens.min() >= 0
        lo, hi = (np.asarray(a)[ps] for a in prior.interval())
        np.testing.assert_allclose(z[0], lo)
        np.testing.assert_allclose(z[-1], hi)
        integral, bound = _trapezoid_with_bound(z[:, None, :], dens)
        assert np.all(np.abs(integral - 1) <= 2 * bound + 1e-5), (integral, bound)
        errs.append(np.abs(integral - 1).max())
    assert errs[1] < errs[0] / 3  # second-order convergence: the error is the grid's, not Z's
    assert errs[1] < 1e-4  # and at 400 points it is small in absolute terms
    z0, d0 = pi0_density_curves(prior, ps, 400)
    integral, bound = _trapezoid_with_bound(z0, d0)
    assert np.all(np.abs(integral - 1) <= 2 * bound + 1e-5)


def test_density_matches_log_prob(be64):
    """The plotted π_{q,p} agrees with the model's own normalised log density where π0 ≫ ε
    (log_prob uses log(π0 + ε)): a product over (q, p) of the curves at one z."""
    prior = _prior(be64, "gaussian")
    z, dens = prior_density_curves(prior, list(range(prior.Q)), list(range(prior.P)), 50)
    k = 25  # the grid point near the middle of every interval
    lp = float(prior.log_prob(be64.asarray(np.broadcast_to(z[k], (1, prior.Q, prior.P)).copy()))[0])
    np.testing.assert_allclose(lp, np.log(dens[k]).sum(), rtol=0, atol=prior.Q * prior.P * 1e-3)


def _assert_layout(size, n_q, n_p, panel_size=PANEL_SIZE, wide=True):
    """len(ps) panels across, len(qs) down, under a header of two text lines (HEADER_H) --
    or, in a grid too narrow for them (wide=False), of more lines of LINE_H pixels."""
    pw, ph = panel_size
    w, h = size
    assert w == n_p * pw
    header = h - n_q * ph
    if wide:
        assert header == HEADER_H
    else:
        assert header > HEADER_H and (header - HEADER_H) % LINE_H == 0


def test_grid_png_size_and_defaults(be64, tmp_path):
    prior = _prior(be64, "gaussian")  # Q = 4, P = 3: defaults cap at what exists
    img = prior_density_grid(prior, title="t", panel_size=(300, 134))  # 900 px: header on 2 lines
    _assert_layout(img.size, 4, 3, (300, 134))
    img = prior_density_grid(prior, qs=[2], ps=[0, 2], n_points=50, panel_size=(150, 100))
    _assert_layout(img.size, 1, 2, (150, 100), wide=False)  # 300 px: the header wraps
    path = tmp_path / "sub" / "p.png"
    save_image(str(path), img)
    assert Image.open(path).size == img.size and Image.open(path).mode == "RGB"
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not the 0600 of mkstemp's temporary file
    assert not [f for f in (tmp_path / "sub").iterdir() if f.name.startswith(".tmp-")]  # atomic write
    arr = np.asarray(img)
    assert (arr[..., 2] > arr[..., 0] + 100).any()  # the blue density line was drawn
    with pytest.raises(ValueError, match=r"valid: 0\.\.3"):
        prior_density_grid(prior, qs=[4])


def test_panel_ticks_and_wrap():
    lines = wrap_text("a bb ccc dddd " * 10, 60)
    assert len(lines) > 1 and " ".join(lines).split() == ("a bb ccc dddd " * 10).split()
    assert nice_ticks(-1.2, 1.2, 4) == [-1.0, 0.0, 1.0]
    assert nice_ticks(0, 4, 5) == [0, 1, 2, 3, 4]
    img, d = canvas(200, 150)
    px = panel(d, (0, 0, 200, 150), [Series([0, 1, 2], [0, 1, np.nan]), Series([0, 2], [1, 1], kind="scatter"),
                                     Series([0, 2], [0.5, 0.5], dash=(4, 3))],
               title="t", xlabel="x", ylabel="y", fit=(0.5, 0.0))
    assert px(0, 0) == (58, 150 - 46)  # the default padding (left 58, bottom 46)
    assert np.asarray(img).min() < 255


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("plotrun")
    assert cli.main(["train", "--dataset", "fmnist", "--data-dir", data_dir, "--no-download", "--n-train", "100",
                     "--n-test", "20", "--batch-size", "50", "--epochs", "1", "--max-iters", "2", "--out", str(out),
                     *TINY]) == 0
    return out / "ckpt.npz"


def test_cli_plot_prior_end_to_end(ckpt, tmp_path, capsys):
    out = tmp_path / "prior.png"
    assert cli.main(["plot-prior", "--ckpt", str(ckpt), "--out", str(out), "--q", "0", "1", "2",
                     "--p", "0", "3"]) == 0
    assert "wrote" in capsys.readouterr().out
    _assert_layout(Image.open(out).size, 3, 2, wide=False)  # 2 columns: the header wraps
    default = tmp_path / "default.png"
    assert cli.main(["plot-prior", "--ckpt", str(ckpt), "--out", str(default), "--no-pi0"]) == 0
    _assert_layout(Image.open(default).size, 8, 4)  # TINY: P = 4 (< 5), Q = 9 (> 8)


def test_cli_plot_prior_bad_q_and_out(ckpt, tmp_path, capsys):
    out = tmp_path / "bad.png"
    assert cli.main(["plot-prior", "--ckpt", str(ckpt), "--out", str(out), "--q", "0", "9"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "--q 9" in err and "0..8" in err and "Q = 9" in err
    assert cli.main(["plot-prior", "--ckpt", str(ckpt), "--out", str(out), "--p", "-1"]) == 2
    assert "0..3" in capsys.readouterr().err
    assert not out.exists()
    assert cli.main(["plot-prior", "--ckpt", str(ckpt), "--out", str(tmp_path / "x.jpg")]) == 2
    assert cli.main(["plot-prior", "--ckpt", str(tmp_path / "missing.npz")]) == 1
    assert "does not exist" in capsys.readouterr().err


# ---- axis ticks and training curves ------------------------------------------------------------
def test_nice_ticks_never_leave_a_lone_tick():
    """A step picked from the range alone left ±0.9 with the single tick "0"; every range
    now gets at least max(2, n − 1) round ticks inside it, and not many more."""
    assert nice_ticks(-0.9, 0.9, 4) == [-0.5, 0.0, 0.5]
    assert nice_ticks(0, 1, 5, integer=True) == [0.0, 1.0] and nice_ticks(0, 10, 5, integer=True)[1] == 2.0
    rng = np.random.default_rng(0)
    for _ in range(500):
        lo = rng.uniform(-10, 10) * 10.0 ** rng.integers(-4, 5)
        hi = lo + rng.exponential() * 10.0 ** rng.integers(-4, 5) + 1e-6 * abs(lo)
        n = int(rng.integers(3, 8))
        t = nice_ticks(lo, hi, n)
        span = hi - lo
        assert max(2, n - 1) <= len(t) <= 2 * n + 1, (lo, hi, n, t)
        assert all(lo - 1e-9 * span <= v <= hi + 1e-9 * span for v in t)
        step = np.diff(t)
        mantissa = step[0] / 10.0 ** np.floor(np.log10(step[0]) + 1e-9)
        assert np.allclose(step, step[0]) and np.isclose(mantissa, [1, 2, 2.5, 5]).any(), (lo, hi, t)


def _log_rows(epochs, loglik, mse, ess=None):
    rows = []
    for i, (e, ll, m) in enumerate(zip(epochs, loglik, mse)):
        rows.append({"epoch": float(e), "iteration": float(10 * e), "time_s": 3.0 * e, "train_loss": np.nan if i == 0 else -ll + 5,
                     "heldout_loglik_nats": ll, "test_mse": m, "ess_mean": np.nan if ess is None else ess[i],
                     "accept_rate": np.nan, "swap_rate": np.nan})
    return rows


def _colour_near(arr, xy, colour, r=1):
    x, y = int(round(xy[0])), int(round(xy[1]))
    patch = arr[y - r:y + r + 1, x - r:x + r + 1].reshape(-1, 3)
    return (np.abs(patch.astype(int) - colour).sum(axis=1) <= 30).any()


def test_training_curves_put_every_logged_value_where_its_axes_say():
    from kaem.plots import CURVE_METRICS, PALETTE, training_curves

    a = _log_rows([0, 1, 2, 3], [-3000.0, -150.0, -40.0, 20.0], [0.19, 0.15, 0.146, 0.144], ess=[1.0, 1.5, 1.2, 1.1])
    b = _log_rows([0, 1, 2], [-3000.0, -120.0, 5.0], [0.19, 0.152, 0.149])
    img, maps = training_curves([("a", a), ("b", b)])
    arr = np.asarray(img)
    # panels only for what was logged: no acceptance or swap rate in IS runs
    assert list(maps) == [m for m, _ in CURVE_METRICS[:4]]
    for k, rows in enumerate((a, b)):
        for metric, px in maps.items():
            for r in rows:
                if np.isfinite(r[metric]) and r["iteration"] > 0:  # the untrained row is off scale
                    assert _colour_near(arr, px(r["epoch"], r[metric]), PALETTE[k]), (k, metric, r)
    # the maps are affine: equal steps in data are equal steps in pixels, and y grows upwards
    px = maps["heldout_loglik_nats"]
    (x0, y0), (x1, y1), (x2, _) = px(0, 0), px(1, 10), px(2, 0)
    assert x1 - x0 == pytest.approx(x2 - x1) and y1 < y0
    # the untrained -3000 lies off scale: the y range is the trained values' (-150..20) padded
    # by 5%, and the lines towards -3000 stop at the frame: no curve colour below it
    bottom = px(0, -150 - 0.05 * 170)[1]
    assert px(0, 20 + 0.05 * 170)[1] < px(3, 20)[1] < px(1, -150)[1] < bottom
    below = arr[int(bottom) + 2:int(bottom) + 60, int(px(0, 0)[0]) - 3:int(px(3, 0)[0]) + 4].reshape(-1, 3).astype(int)
    for colour in PALETTE[:2]:
        assert not (np.abs(below - colour).sum(axis=1) <= 30).any()
    full, fmaps = training_curves([("a", a)], full_range=True)
    assert _colour_near(np.asarray(full), fmaps["heldout_loglik_nats"](0, -3000.0), PALETTE[0])


def test_cli_plot_log_two_runs(tmp_path, capsys):
    """plot-log on two run folders draws what training_curves draws from their log.csv."""
    import csv as _csv

    from kaem.plots import training_curves
    from kaem.run.logfile import read_log

    for name, rows in (("is", _log_rows([0, 1, 2], [-3000.0, -100.0, 10.0], [0.2, 0.15, 0.14], ess=[1, 2, 3])),
                       ("thermo", _log_rows([0, 1, 2], [-3000.0, -90.0, 30.0], [0.2, 0.16, 0.13]))):
        (tmp_path / name).mkdir()
        with open(tmp_path / name / "log.csv", "w", newline="") as fh:
            w = _csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows({k: ("" if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()} for r in rows)
    out = tmp_path / "curves.png"
    assert cli.main(["plot-log", str(tmp_path / "is"), str(tmp_path / "thermo" / "log.csv"), "--out", str(out)]) == 0
    runs = [("is", read_log(str(tmp_path / "is"))), ("thermo", read_log(str(tmp_path / "thermo")))]
    expected, _ = training_curves(runs)
    np.testing.assert_array_equal(np.asarray(Image.open(out).convert("RGB")), np.asarray(expected))
    assert cli.main(["plot-log", str(tmp_path / "nothing"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "nothing" in err and "log.csv" in err
    assert cli.main(["plot-log", str(tmp_path / "is"), "--labels", "x", "y", "--out", str(out)]) == 2
