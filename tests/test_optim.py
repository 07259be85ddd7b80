"""Optimisers against three-step traces computed by hand (θ0 = 1, gradients 2, −1, 0.5,
η = 0.1, float64), against independent formulas on random arrays (Optimisers.jl's own
form where ours is rearranged), state round trips and errors; the step schedule."""
from __future__ import annotations

import math

import numpy as np
import pytest

from kaem.config import load_config
from kaem.build import make_optimizer, step_schedule
from kaem.optim import (OPTIMIZERS, SGD, Adam, AdamW, Momentum, Nesterov, OptimizerStateError, RMSProp,
                        StepSchedule)

GRADS = [2.0, -1.0, 0.5]


def _trace(opt_cls, **kw):
    p = {"w": np.array([1.0])}
    opt = opt_cls(p, lr=0.1, **kw)
    out = []
    for g in GRADS:
        opt.step({"w": np.array([g])})
        out.append(p["w"][0])
    assert opt.t == 3
    return out


def _check(got, want, tol=1e-9):
    assert np.allclose(got, want, rtol=0, atol=tol), (got, want)


def test_adam_three_step_hand_trace():
    # β1 0.9, β2 0.999, ε 1e-8.
    # t=1: m=0.2, v=0.004, m̂=2, v̂=4       -> θ = 1 - 0.1·2/(2+1e-8)             = 0.900000000500
    # t=2: m=0.08, v=0.004996, m̂=0.08/0.19=0.4210526316, v̂=0.004996/0.001999=2.4992496248
    #      -> θ = θ1 - 0.1·0.4210526316/(1.5809015228+1e-8)                    = 0.8733662967
    # t=3: m=0.122, v=0.005241004, m̂=0.122/0.271=0.4501845018,
    #      v̂=0.005241004/0.002997001=1.7487494999
    #      -> θ = θ2 - 0.1·0.4501845018/(1.3224029265+1e-8)                    = 0.8393233821
    _check(_trace(Adam), [0.9000000005, 0.8733662967, 0.8393233821])


def test_sgd_hand_trace():
    # θ = 1 - 0.2 = 0.8;  0.8 + 0.1 = 0.9;  0.9 - 0.05 = 0.85
    _check(_trace(SGD), [0.8, 0.9, 0.85], 1e-15)


def test_momentum_hand_trace():
    # ρ 0.9.  v=0.2, θ=0.8;  v=0.18-0.1=0.08, θ=0.72;  v=0.072+0.05=0.122, θ=0.598
    _check(_trace(Momentum, rho=0.9), [0.8, 0.72, 0.598], 1e-15)


def test_nesterov_hand_trace():
    # ρ 0.9, θ ← θ − (ρ v + η g) with v after its update.
    # v=0.2,   θ = 1     - (0.18   + 0.2 ) = 0.62
    # v=0.08,  θ = 0.62  - (0.072  - 0.1 ) = 0.648
    # v=0.122, θ = 0.648 - (0.1098 + 0.05) = 0.4882
    _check(_trace(Nesterov, rho=0.9), [0.62, 0.648, 0.4882], 1e-15)


def test_rmsprop_hand_trace():
    # ρ 0.9, ε 1e-8.
    # s=0.4,   θ = 1      - 0.2 /(0.6324555320+1e-8) = 1 - 0.3162277610          = 0.6837722390
    # s=0.46,  θ = θ1     + 0.1 /(0.6782329983+1e-8) = θ1 + 0.1474419540         = 0.8312141930
    # s=0.439, θ = θ2     - 0.05/(0.6625707509+1e-8) = θ2 - 0.0754636379         = 0.7557505551
    _check(_trace(RMSProp, rho=0.9, eps=1e-8), [0.6837722390, 0.8312141930, 0.7557505551])


def test_adamw_hand_trace():
    # λ 0.5; u = Adam's m̂/(√v̂+ε) from the Adam trace: 0.999999995, 0.2663370380, 0.3404291456.
    # θ = 1      - 0.1·(0.999999995  + 0.5·1     ) = 0.8500000005
    # θ = θ1     - 0.1·(0.2663370380 + 0.5·θ1    ) = 0.7808662967
    # θ = θ2     - 0.1·(0.3404291456 + 0.5·θ2    ) = 0.7077800673
    _check(_trace(AdamW, weight_decay=0.5), [0.8500000005, 0.7808662967, 0.7077800673])


def _reference_updates(kind, theta, grads, lrs, rho=0.8, betas=(0.7, 0.95), eps=1e-3, lam=0.3):
    """Independent formulas, written as in Optimisers.jl (Nesterov with its velocity −v,
    AdamW as a coupled decay, Adam with β^t products), on whole arrays."""
    th, a, b, bt = theta.copy(), np.zeros_like(theta), np.zeros_like(theta), np.ones(2)
    for g, lr in zip(grads, lrs):
        if kind == "sgd":
            th = th - lr * g
        elif kind == "momentum":
            a = rho * a + lr * g
            th = th - a
        elif kind == "nesterov":
            newdx = -rho ** 2 * a + (1 + rho) * lr * g
            a = rho * a - lr * g
            th = th - newdx
        elif kind == "rmsprop":
            a = rho * a + (1 - rho) * g ** 2
            th = th - g * lr / (np.sqrt(a) + eps)
        else:
            bt = bt * betas
            a = betas[0] * a + (1 - betas[0]) * g
            b = betas[1] * b + (1 - betas[1]) * g ** 2
            u = a / (1 - bt[0]) / (np.sqrt(b / (1 - bt[1])) + eps)
            th = th - lr * (u + (lam * th if kind == "adamw" else 0))
    return th


@pytest.mark.parametrize("kind", list(OPTIMIZERS))
def test_matches_independent_formula_with_changing_rate(kind):
    rng = np.random.default_rng(3)
    theta = rng.standard_normal((4, 3))
    grads = [rng.standard_normal((4, 3)) for _ in range(6)]
    lrs = [0.1, 0.1, 0.1, 0.01, 0.01, 0.001]  # a step schedule inside the run
    cfg = load_config("mnist", overrides=[f"OPTIMIZER.type={kind}", "OPTIMIZER.ρ=0.8", "OPTIMIZER.betas=0.7,0.95",
                                          "OPTIMIZER.ε=1e-3"] + (["OPTIMIZER.decay=0.3"] if kind == "adamw" else []))
    p = {"w": theta.copy()}
    opt = make_optimizer(p, cfg["OPTIMIZER"])
    assert opt.name == kind
    for g, lr in zip(grads, lrs):
        opt.lr = lr
        opt.step({"w": g})
    np.testing.assert_allclose(p["w"], _reference_updates(kind, theta, grads, lrs), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("kind", list(OPTIMIZERS))
def test_state_round_trip_continues_identically(kind):
    cfg = load_config("mnist", overrides=[f"OPTIMIZER.type={kind}"])
    rng = np.random.default_rng(1)
    p = {"a": rng.standard_normal(3), "b": rng.standard_normal((2, 2))}
    q = {k: v.copy() for k, v in p.items()}
    opt, opt2 = make_optimizer(p, cfg["OPTIMIZER"]), make_optimizer(q, cfg["OPTIMIZER"])
    for _ in range(2):
        opt.step({k: rng.standard_normal(v.shape) for k, v in p.items()})
    opt.lr = 0.0005
    opt2.load_state_dict({k: np.asarray(v) for k, v in opt.state_dict().items()})  # as a checkpoint holds them
    assert (opt2.t, opt2.lr) == (2, 0.0005)
    for k in p:
        q[k][...] = p[k]
    g = {k: rng.standard_normal(v.shape) for k, v in p.items()}
    opt.step(g)
    opt2.step(g)
    for k in p:
        np.testing.assert_array_equal(p[k], q[k])


def test_load_state_dict_names_the_bad_field():
    p = {"a": np.zeros(3), "b": np.zeros((2, 2))}
    opt = Adam(p)
    opt.step({"a": np.ones(3), "b": np.ones((2, 2))})
    good = opt.state_dict()
    cases = {
        "'type' is 'nesterov'": {**good, "type": "nesterov"},
        "'t'": {**good, "t": -1},
        "'lr'": {**good, "lr": float("nan")},
        "'m/a' is missing": {k: v for k, v in good.items() if k != "m/a"},
        "'v/b' has shape (4,)": {**good, "v/b": np.zeros(4)},
        "'m/b' is not a finite": {**good, "m/b": np.full((2, 2), np.inf)},
        "'v/a' holds negative": {**good, "v/a": -np.ones(3)},
        "'s/a' does not belong": {**good, "s/a": np.zeros(3)},
    }
    before = {k: np.copy(v) for k, v in opt.state_dict().items()}
    for words, state in cases.items():
        with pytest.raises(OptimizerStateError, match=words.replace("(", r"\(").replace(")", r"\)")):
            opt.load_state_dict(state)
    after = opt.state_dict()
    for k, v in before.items():  # nothing was half-loaded
        np.testing.assert_array_equal(after[k], v)


def test_make_optimizer_passes_each_type_its_keys():
    def build(*sets):
        return make_optimizer({"w": np.zeros(2)}, load_config("mnist", overrides=list(sets))["OPTIMIZER"])

    o = build("OPTIMIZER.type=nesterov", "OPTIMIZER.rho=0.7", "OPTIMIZER.learning_rate=0.02")
    assert isinstance(o, Nesterov) and (o.rho, o.lr) == (0.7, 0.02)
    o = build("OPTIMIZER.type=rmsprop", "OPTIMIZER.ρ=0.6", "OPTIMIZER.eps=1e-6")
    assert isinstance(o, RMSProp) and (o.rho, o.eps) == (0.6, 1e-6)
    o = build("OPTIMIZER.type=adamw", "OPTIMIZER.decay=0.01", "OPTIMIZER.betas=0.8,0.99")
    assert isinstance(o, AdamW) and (o.weight_decay, o.beta1, o.beta2) == (0.01, 0.8, 0.99)
    assert type(build()) is Adam  # the default


def test_step_schedule_decays_at_each_milestone():
    s = StepSchedule(0.1, 0.1, (3, 6, 9))
    want = [0.1] * 3 + [0.01] * 3 + [0.001] * 3 + [1e-4] * 2
    got = [s.lr_at(e) for e in range(11)]
    assert all(math.isclose(a, b, rel_tol=1e-12) for a, b in zip(got, want)), got
    assert step_schedule(load_config("mnist")).lr_at(100) == 0.001  # no milestones by default


def test_resume_across_a_milestone_is_exact(data_dir, tmp_path, capsys):
    """Nesterov with a decay at epoch 2 (4 iterations per epoch): a run stopped at iteration 3
    and resumed to the end equals the uninterrupted run bit for bit (CPU), and the stored
    optimiser state carries its type and the decayed rate."""
    import cli
    from kaem.run.checkpoint import load_checkpoint

    def train(out, *extra):
        return cli.main(["train", "--dataset", "fmnist", "--data-dir", data_dir, "--no-download",
                         "--n-train", "200", "--n-test", "20", "--batch-size", "50", "--epochs", "3",
                         "--out", str(out), "--set", "EbmModel.layer_widths=3,5", "--set", "GeneratorModel.widths=5,8",
                         "--set", "EbmModel.grid_size=5", "--set", "GeneratorModel.grid_size=5",
                         "--set", "TRAINING.importance_sample_size=10", "--set", "TRAINING.eval_importance_samples=20",
                         "--set", "OPTIMIZER.type=nesterov", "--set", "OPTIMIZER.learning_rate=0.01",
                         "--set", "LR_SCHEDULE.decay=0.1", "--set", "LR_SCHEDULE.milestone_epochs=2", *extra])

    assert train(tmp_path / "straight") == 0
    assert "[epoch 2] learning rate 0.01 -> 0.001" in capsys.readouterr().err
    assert train(tmp_path / "split", "--max-iters", "3") == 0
    ckpt = str(tmp_path / "split" / "ckpt.npz")
    assert cli.main(["train", "--resume", ckpt, "--epochs", "3", "--data-dir", data_dir, "--no-download",
                     "--n-test", "20"]) == 0
    a, b = load_checkpoint(ckpt), load_checkpoint(str(tmp_path / "straight" / "ckpt.npz"))
    assert a["meta"]["iteration"] == b["meta"]["iteration"] == 12
    assert str(a["optimizer"]["type"]) == "nesterov" and float(a["optimizer"]["lr"]) == pytest.approx(0.001)
    for group in ("params", "optimizer"):
        assert a[group].keys() == b[group].keys()
        for k in a[group]:
            np.testing.assert_array_equal(a[group][k], b[group][k], err_msg=f"{group} {k}")


def test_version_1_checkpoint_still_resumes_as_adam(tmp_path, be64):
    """A checkpoint of format version 1 (Adam state under adam/, a stored config without the
    optimiser keys added since) loads: as Adam, with the defaults older code used."""
    import re

    from conftest import tiny_config
    from kaem.run.checkpoint import load_checkpoint, restore_model
    from kaem.model import KAEM
    from kaem.run.trainer import Trainer

    x = np.random.default_rng(0).random((20, 6))
    tr = Trainer(KAEM(tiny_config(), (1, 2, 3), be64), be64, x, x[:5], str(tmp_path), log=lambda m: None)
    tr.run(epochs=1)
    new = str(tmp_path / "ckpt.npz")
    with np.load(new) as z:
        arrays = {k: z[k] for k in z.files}
    text = str(arrays["config"])
    text = re.sub(r"\n(betas|ε|ρ|decay) = [^\n]*", "", text.split("[LR_SCHEDULE]")[0])
    old = {("adam/" + k[6:] if k.startswith("optim/") else k): v for k, v in arrays.items()
           if k not in ("optim/type", "optim/lr")}
    old.update(version=np.array(1), config=np.array(text))
    np.savez(tmp_path / "v1.npz", **old)

    ckpt = load_checkpoint(str(tmp_path / "v1.npz"))
    model = restore_model(ckpt, be64)
    tr2 = Trainer(model, be64, x, x[:5], str(tmp_path / "resumed"), log=lambda m: None)
    tr2.restore(ckpt)
    assert tr2.opt.name == "adam" and tr2.opt.t == tr.opt.t and tr2.opt.lr == 0.001
    for s in ("m", "v"):
        for k, a in tr.opt.state[s].items():
            np.testing.assert_array_equal(tr2.opt.state[s][k], a)
