"""``eval --estimator is|ais``: the CLI on tiny checkpoints (JSON keys, human lines, BDMC, the
deep prior's log Z), one-line refusals of bad options, the per-epoch log's estimator columns,
and what is reported next to every estimate: the summed quadrature error and its flag."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

import cli
from conftest import TINY_CLI
from kaem.backend import get_backend
from kaem.evaluation.report import err_exceeds, log_columns, normaliser_check
from kaem.nn.kan import KANSpec
from kaem.priors import MixturePrior, UnivariatePrior
from kaem.run.failures import CommandError
from kaem.run.scoring import eval_settings

AIS = ["--estimator", "ais", "--temps", "8", "--chains", "3"]  # small K and C: the plumbing, not the accuracy


def _eval(run, data_dir, *extra):
    return ["eval", "--ckpt", str(run / "ckpt.npz"), "--data-dir", data_dir, "--no-download", "--n-test", "12",
            *extra]


@pytest.fixture(scope="module")
def run(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("tiny")
    assert cli.main(["train", "--dataset", "fmnist", "--data-dir", data_dir, "--no-download", "--n-train", "40",
                     "--n-test", "12", "--batch-size", "20", "--epochs", "1", "--out", str(out), *TINY_CLI]) == 0
    return out


@pytest.fixture(scope="module")
def deep_run(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("deep")
    tiny = ["--set", "EbmModel.layer_widths=4,6,1", "--set", "GeneratorModel.widths=4,6", "--set", "EbmModel.π_0=gaussian",
            "--set", "EbmModel.deep_body=mlp", "--set", "PRIOR_LANGEVIN.iters=3", "--set", "GeneratorModel.grid_size=3",
            "--set", "TRAINING.importance_sample_size=10", "--set", "TRAINING.eval_importance_samples=10"]
    assert cli.main(["train", "--dataset", "fmnist", "--data-dir", data_dir, "--no-download", "--n-train", "20",
                     "--n-test", "4", "--batch-size", "20", "--epochs", "1", "--out", str(out), *tiny]) == 0
    return out


def _finite(res, *keys):
    bad = {k: res.get(k) for k in keys if not (isinstance(res.get(k), (int, float)) and math.isfinite(res[k]))}
    assert not bad, bad


def test_ais_json_with_bdmc(run, data_dir, capsys):
    assert cli.main(_eval(run, data_dir, *AIS, "--bdmc", "4", "--json")) == 0
    out, err = capsys.readouterr()
    res = json.loads(out)
    _finite(res, "loglik_nats", "loglik_se", "loglik_mc_se", "ess", "ess_min", "bits_per_dim", "test_mse",
            "logZ_quad_err", "logZ_quad_err_sum", "bdmc_lower_nats", "bdmc_upper_nats", "bdmc_gap_nats",
            "bdmc_lower_se", "bdmc_upper_se", "bdmc_gap_se")
    assert res["estimator"] == "ais" and (res["temps"], res["chains"], res["bdmc_n"], res["n_test"]) == (8, 3, 4, 12)
    assert 1 <= res["ess_min"] <= res["ess"] <= 3 and res["loglik_se"] > 0
    assert res["bdmc_gap_nats"] == pytest.approx(res["bdmc_upper_nats"] - res["bdmc_lower_nats"], rel=1e-9, abs=1e-9)
    assert res["logZ_quad_err_sum"] >= res["logZ_quad_err"] >= 0
    assert res["logZ_err_flag"] is (res["logZ_quad_err_sum"] > res["loglik_se"])
    assert not any(k.endswith("_per_image") for k in res)  # one object of summaries
    assert "eval: AIS on 12 test images and BDMC on 4" in err


def test_per_image_lists_pair_two_evaluations(run, data_dir, capsys):
    """--per-image adds each image's estimate and ESS, whose mean and spread are the summary's."""
    assert cli.main(_eval(run, data_dir, *AIS, "--json", "--per-image")) == 0
    res = json.loads(capsys.readouterr().out)
    per, ess = np.array(res["loglik_per_image"]), np.array(res["ess_per_image"])
    assert per.shape == ess.shape == (12,)
    assert res["loglik_nats"] == pytest.approx(per.mean(), rel=1e-12)
    assert res["loglik_se"] == pytest.approx(per.std(ddof=1) / math.sqrt(12), rel=1e-12)
    assert res["ess"] == pytest.approx(ess.mean(), rel=1e-12)
    assert cli.main(_eval(run, data_dir, *AIS, "--per-image")) == 2
    assert "--per-image needs --json" in capsys.readouterr().err
    assert cli.main(_eval(run, data_dir, "--samples", "30", "--json", "--per-image")) == 0
    res = json.loads(capsys.readouterr().out)
    per, ess = np.array(res["loglik_per_image"]), np.array(res["ess_per_image"])
    assert per.shape == ess.shape == (12,) and res["loglik_nats"] == pytest.approx(per.mean(), rel=1e-12)
    assert ((1 <= ess) & (ess <= 30)).all() and res["ess_min"] == pytest.approx(ess.min(), rel=1e-12)


def test_ais_human_output_names_estimator_settings_se_and_ess(run, data_dir, capsys):
    assert cli.main(_eval(run, data_dir, *AIS, "--bdmc", "3")) == 0
    out = capsys.readouterr().out
    assert " ± " in out.splitlines()[1] and "nats/image" in out
    assert "annealed importance sampling, K = 8 temperatures" in out and "C = 3 chains" in out and "ESS" in out
    assert "Σ_(q,p) |Δ log Z|" in out and "over the 6 functions" in out  # Q·P = 3·2
    assert "BDMC on 3 images simulated" in out and "gap" in out


def test_is_json_and_output(run, data_dir, capsys):
    assert cli.main(_eval(run, data_dir, "--estimator", "is", "--samples", "30", "--json")) == 0
    res = json.loads(capsys.readouterr().out)
    _finite(res, "loglik_nats", "loglik_se", "loglik_mc_se", "ess", "bits_per_dim", "test_mse", "logZ_quad_err_sum")
    assert res["estimator"] == "is" and res["S"] == 30 and 1 <= res["ess_min"] <= res["ess"] <= 30
    assert res["logZ_err_flag"] is (res["logZ_quad_err_sum"] > res["loglik_se"])
    assert cli.main(_eval(run, data_dir, "--samples", "30")) == 0  # --samples alone means IS
    out = capsys.readouterr().out
    assert "importance sampling from the prior, S = 30 samples" in out and "ESS" in out and " ± " in out


def test_default_estimator_is_ais_unless_samples_given():
    assert eval_settings().estimator == "ais" and eval_settings(temps=5).estimator == "ais"
    assert eval_settings(samples=10).estimator == "is"
    assert eval_settings("is").samples is None and eval_settings("ais", bdmc=None).bdmc == 0


@pytest.mark.parametrize("argv,words", [
    (["--estimator", "ais", "--samples", "10"], ["--samples 10", "--temps"]),
    (["--estimator", "is", "--temps", "10"], ["--temps 10", "--samples"]),
    (["--samples", "10", "--chains", "2", "--bdmc", "3"], ["--chains 2, --bdmc 3", "--estimator is"]),
    (["--temps", "0"], ["--temps", "from 1 to 100000", "'0'"]),
    (["--chains", "5000"], ["--chains", "from 1 to 4096"]),
    (["--bdmc", "-1"], ["--bdmc", "from 1 to 10000"]),
    (["--estimator", "hmc"], ["--estimator", "'hmc'", "'ais', 'is'"]),
])
def test_bad_options_are_one_line(run, data_dir, capsys, argv, words):
    try:
        code = cli.main(_eval(run, data_dir, *argv))
    except SystemExit as e:  # argparse's own checks
        code = e.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert all(w in err[0] for w in words), err[0]


def test_settings_checked_from_python_too():
    for kwargs, word in (({"temps": 0}, "--temps 0"), ({"chains": 1.5}, "--chains 1.5"),
                         ({"samples": True}, "--samples True"), ({"estimator": "x"}, "'x'")):
        with pytest.raises(CommandError, match=word):
            eval_settings(**kwargs)


def test_deep_prior_ais_reports_log_Z_and_refuses_bdmc(deep_run, data_dir, capsys):
    argv = ["eval", "--ckpt", str(deep_run / "ckpt.npz"), "--data-dir", data_dir, "--no-download", "--n-test", "4",
            "--temps", "4", "--chains", "2"]
    assert cli.main(argv + ["--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    _finite(res, "loglik_nats", "loglik_se", "logZ", "logZ_se", "loglik_se_images")
    assert res["loglik_se"] >= res["logZ_se"] >= 0 and "logZ_quad_err_sum" not in res
    assert res["logZ_err_flag"] is (res["logZ_se"] > res["loglik_se_images"])
    assert cli.main(argv) == 0
    assert "deep prior: log Z = " in capsys.readouterr().out
    assert cli.main(argv + ["--bdmc", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--bdmc" in err[0] and "deep prior" in err[0] and "univariate and mixture" in err[0]


def test_flagged_estimate_warns_and_says_so_in_json(run, data_dir, capsys, monkeypatch):
    monkeypatch.setattr(UnivariatePrior, "quadrature_error_sum", lambda self: 1e6)
    assert cli.main(_eval(run, data_dir, "--samples", "10", "--json")) == 0
    assert json.loads(capsys.readouterr().out)["logZ_err_flag"] is True
    assert cli.main(_eval(run, data_dir, "--samples", "10")) == 0
    assert "warning: the summed quadrature error 1e+06 nats exceeds the standard error" in capsys.readouterr().out


# --------------------------------------------------------------------------- the per-epoch log

def test_log_csv_names_the_estimator_and_the_quadrature_flag(run):
    rows = list(csv.DictReader(open(run / "log.csv")))
    assert len(rows) == 2  # untrained, epoch 1
    for r in rows:
        assert r["estimator"] == "is" and r["eval_samples"] == "20"  # TINY_CLI's eval_importance_samples
        se, quad = float(r["heldout_loglik_se"]), float(r["logZ_quad_err_sum"])
        assert se > 0 and quad >= 0 and 1 <= float(r["heldout_ess"]) <= 20
        assert r["logZ_err_flag"] == str(int(quad > se))


def test_old_logs_stay_readable_and_are_extended_on_resume(tmp_path):
    from kaem.run.logfile import read_log, reconcile
    from kaem.run.trainer import CSV_COLUMNS

    old = CSV_COLUMNS[:CSV_COLUMNS.index("estimator")]
    path = tmp_path / "log.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(old)
        w.writerow(["1.0", "1.0", "4", "3.0", "-5.0", "0.1", "0.2"] + [""] * (len(old) - 7))
    rows = read_log(str(tmp_path))
    assert rows[0]["heldout_loglik_nats"] == -5.0 and "estimator" not in rows[0]
    reconcile(str(path), CSV_COLUMNS, 4, False)  # what a resumed run does first
    header = next(csv.reader(open(path)))
    assert header == list(CSV_COLUMNS)
    row = read_log(str(tmp_path))[0]
    assert row["heldout_loglik_nats"] == -5.0 and math.isnan(row["logZ_err_flag"])


def test_plot_log_reads_an_old_and_a_new_log(run, tmp_path):
    from kaem.run.plotting import plot_log
    from kaem.run.trainer import CSV_COLUMNS

    old = tmp_path / "old"
    old.mkdir()
    keep = CSV_COLUMNS[:CSV_COLUMNS.index("estimator")]
    with open(run / "log.csv") as src, open(old / "log.csv", "w", newline="") as dst:
        w = csv.DictWriter(dst, fieldnames=list(keep), extrasaction="ignore")
        w.writeheader()
        w.writerows(csv.DictReader(src))
    plot_log([str(run), str(old)], str(tmp_path / "c.png"))
    assert (tmp_path / "c.png").stat().st_size > 0


# --------------------------------------------------------------------------- the normaliser's error and its flag

class _Quad:
    has_exact_logZ = True

    def __init__(self, worst, total):
        self.worst, self.total = worst, total

    def quadrature_error(self):
        return self.worst

    def quadrature_error_sum(self):
        return self.total


class _Deep:
    has_exact_logZ = False


def test_flag_logic():
    assert not err_exceeds(0.1, 0.2) and not err_exceeds(0.2, 0.2) and err_exceeds(0.3, 0.2)
    assert err_exceeds(0.1, math.nan)  # no standard error (one image): cannot vouch for the figure
    assert normaliser_check(_Quad(0.01, 0.05), {"loglik_se": 0.1}) == {
        "logZ_quad_err": 0.01, "logZ_quad_err_sum": 0.05, "logZ_err_flag": False}
    assert normaliser_check(_Quad(0.01, 0.5), {"loglik_se": 0.1})["logZ_err_flag"] is True
    # the deep prior: its log Z standard error against the images' part of the standard error
    assert normaliser_check(_Deep(), {"loglik_se": 3.0, "loglik_se_images": 0.1, "logZ_se": 0.2}) == {
        "logZ_err_flag": True}
    assert normaliser_check(_Deep(), {"loglik_se": 3.0, "logZ_is_se": 0.2}) == {"logZ_err_flag": False}
    cols = log_columns({"estimator": "is", "S": 7, "loglik_se": 1.0, "ess": 2.0, "logZ_quad_err_sum": 3.0,
                        "logZ_err_flag": True})
    assert cols == {"estimator": "is", "eval_samples": 7, "heldout_loglik_se": 1.0, "heldout_ess": 2.0,
                    "logZ_err_flag": 1, "logZ_quad_err_sum": 3.0}


@pytest.mark.parametrize("kind", ["univariate", "mixture"])
def test_summed_quadrature_error_is_the_sum_over_functions(kind):
    """Σ_{o,i} |log Z − log Z refined| over every function: between the max and O·I times it,
    and equal to the sum computed from log_Z directly."""
    be = get_backend("cpu", "float64")
    cls = UnivariatePrior if kind == "univariate" else MixturePrior
    prior = cls(be, 3, 4, KANSpec(basis="FFT", grid_size=20), be.rng(0), n_nodes=12)
    prior.layer.params["coef"][...] = be.rng(1).standard_normal(prior.layer.params["coef"].shape)
    d = np.abs(prior.log_Z(cache=False) - prior.log_Z(cache=False, refine=2))
    assert prior.quadrature_error_sum() == pytest.approx(float(d.sum()), rel=1e-12)
    assert prior.quadrature_error() <= prior.quadrature_error_sum() <= d.size * prior.quadrature_error()
    assert prior.quadrature_error_sum() > prior.quadrature_error() > 0


def test_is_ess_and_chunks(monkeypatch):
    """The IS log-likelihood and ESS from running sums over chunks equal those from all S
    weights at once (ESS = (Σw)²/Σw², in [1, S]); ``heldout_loglik`` gives the same figure."""
    import kaem.evaluation.heldout as heldout
    from conftest import tiny_config
    from kaem.model import KAEM

    be = get_backend("cpu", "float64")
    m = KAEM(tiny_config(), (1, 2, 3), be, seed=0)
    x = be.asarray(np.random.default_rng(0).random((5, 6)))
    z = m.sample_prior(60, be.rng(3))
    lw = m.lik.log_density_matrix(x, m.generator.forward(m.prior.to_input(z), cache=False))  # (5, 60)
    w = np.exp(lw - lw.max(1, keepdims=True))
    want_lp = np.log(w.mean(1)) + lw.max(1)
    want_ess = w.sum(1) ** 2 / (w ** 2).sum(1)
    for chunk in (60, 7):
        rows = iter(range(60))
        monkeypatch.setattr(heldout, "eval_latents",
                            lambda model, n, rng, log_Z=None: (z[[next(rows) for _ in range(n)]], 0.0))
        lp, ess = heldout.heldout_is(m, x, 60, None, chunk=chunk)
        np.testing.assert_allclose(lp, want_lp, rtol=1e-12)
        np.testing.assert_allclose(ess, want_ess, rtol=1e-10)
        assert np.all((ess >= 1 - 1e-12) & (ess <= 60 + 1e-9))
    rows = iter(range(60))
    np.testing.assert_array_equal(heldout.heldout_loglik(m, x, 60, None, chunk=7), lp)
