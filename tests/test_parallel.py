"""One minibatch split over ranks gives the one-process numbers (float64, no MPI needed).

* kaem/streams.py: a datum's (a chain's) random numbers are rows of one global draw,
  whatever blocks of rows a process holds, and every process's shared stream stands at the
  same place afterwards;
* kaem/parallel/split.py: the blocks and the checks of --parallel;
* the objectives (kaem/objectives) with ranks as threads (tests/threadcomm.py): each rank's
  share of the loss and gradients sums to the one-process values, and the diagnostics, the
  posterior samples behind grid updates and the next random numbers are the same, for every
  objective, a batch that the number of ranks does not divide, and both splits of the ladder.
"""
from __future__ import annotations

import numpy as np
import pytest

from conftest import randomise, tiny_config
from gradcheck import rel_error
from kaem.backend import get_backend
from kaem.model import KAEM
from kaem.objectives import training_step
from kaem.parallel import SerialComm, Split, block
from kaem.run.failures import CommandError
from kaem.run.ranks import check_split
from kaem.streams import RowDraws, normal_streams, standard_normal_
from threadcomm import run_ranks

BE = get_backend("cpu", "float64")


# ---- random numbers by row ----------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(11,), (11, 3), (11, 2, 5)])
@pytest.mark.parametrize("normal", [True, False])
def test_a_process_draws_its_rows_of_the_global_array(dtype, shape, normal):
    """Rows drawn by blocks (in any order of segments) equal the same rows of the whole draw,
    and the shared generator ends at the same position whatever was drawn."""
    def draw(segments):
        g = np.random.default_rng(5)
        d = RowDraws(g, segments, shape[0])
        n = sum(b - a for a, b in segments)
        x = (d.standard_normal if normal else d.random)((n,) + shape[1:], dtype=dtype)
        return x, g.random(3)

    whole, after = draw([(0, shape[0])])
    assert whole.dtype == dtype
    for segments in ([(0, 4)], [(4, 7), (9, 11)], [(9, 11), (0, 2)], [(6, 7)], []):
        rows = np.concatenate([np.arange(a, b) for a, b in segments] + [np.zeros(0, int)])
        part, after_part = draw(segments)
        np.testing.assert_array_equal(part, whole[rows])
        np.testing.assert_array_equal(after_part, after)


def test_row_draws_refuse_a_shape_that_is_not_their_rows():
    d = RowDraws(np.random.default_rng(0), [(2, 5)], 10)
    with pytest.raises(ValueError, match="3 of 10"):
        d.standard_normal((4, 2))
    assert d.n == 3 and isinstance(d.integers(0, 5), (int, np.integer))


def test_normals_are_box_muller_pairs_so_even_blocks_are_the_whole_draw():
    g1, g2 = np.random.default_rng(3), np.random.default_rng(3)
    whole = standard_normal_(g1, np.empty(20))
    parts = np.concatenate([standard_normal_(g2, np.empty(n)) for n in (4, 8, 6, 2)])
    np.testing.assert_array_equal(parts, whole)
    assert abs(whole.mean()) < 1 and 0.3 < whole.std() < 2  # plausibly standard normal
    g3 = np.random.default_rng(3)
    streams = normal_streams(g3, [4, 8, 6, 2], np.float64, [0, 2])
    got = [standard_normal_(streams[0], np.empty(4)), standard_normal_(streams[0], np.empty(8)),
           standard_normal_(streams[1], np.empty(6)), standard_normal_(streams[1], np.empty(2))]
    np.testing.assert_array_equal(np.concatenate(got), whole)


# ---- splits ------------------------------------------------------------------------------------

@pytest.mark.parametrize("n,size", [(7, 2), (13, 3), (100, 7), (4, 4)])
def test_blocks_cover_every_item_once(n, size):
    edges = [block(n, r, size) for r in range(size)]
    assert edges[0][0] == 0 and edges[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(edges, edges[1:]))
    assert max(b - a for a, b in edges) - min(b - a for a, b in edges) <= 1


class _Size:
    def __init__(self, size: int) -> None:
        self.size, self.rank, self.local_rank = size, 0, 0


def test_the_split_must_fit_the_run():
    cfg = tiny_config()
    thermo = tiny_config("THERMODYNAMIC_INTEGRATION.num_temps=3")
    check_split(_Size(2), "data", cfg, 7)
    check_split(_Size(3), "temperatures", thermo, 7)
    with pytest.raises(CommandError, match="objective is is"):
        check_split(_Size(2), "temperatures", cfg, 7)
    with pytest.raises(CommandError, match="needs at least 4 temperatures"):
        check_split(_Size(4), "temperatures", thermo, 7)
    with pytest.raises(CommandError, match="batch of at least 8"):
        check_split(_Size(8), "data", cfg, 7)
    with pytest.raises(CommandError, match="valid: data, temperatures"):
        check_split(_Size(1), "pipeline", cfg, 7)
    assert Split.serial(5) == Split(5, 0, 5, SerialComm()) or Split.serial(5).local == 5


# ---- the objectives over ranks -----------------------------------------------------------

RUNS = {
    "is": [],
    "is-pair-stratified": ["GeneratorModel.noise_sharing=pair", "GeneratorModel.resampler=stratified"],
    "is-exact-logZ": ["TRAINING.contrastive_divergence_training=false"],
    "ula": ["POST_LANGEVIN.use_langevin=true", "POST_LANGEVIN.iters=3"],
    "automala": ["POST_LANGEVIN.use_langevin=true", "POST_LANGEVIN.use_autoMALA=true", "POST_LANGEVIN.iters=3"],
    "ula-pair-mixture": ["POST_LANGEVIN.use_langevin=true", "POST_LANGEVIN.iters=3",
                         "GeneratorModel.noise_sharing=pair", "MixtureModel.use_mixture_prior=true"],
    "thermo": ["THERMODYNAMIC_INTEGRATION.num_temps=3", "THERMODYNAMIC_INTEGRATION.N_langevin_per_temp=2"],
    "thermo-automala-right": ["THERMODYNAMIC_INTEGRATION.num_temps=3", "THERMODYNAMIC_INTEGRATION.N_langevin_per_temp=2",
                              "POST_LANGEVIN.use_autoMALA=true", "THERMODYNAMIC_INTEGRATION.integration_rule=right",
                              "GeneratorModel.noise_sharing=pair"],
}
B = 7  # a batch that 2 and 3 ranks do not divide


def _model(name):
    cfg = tiny_config("TRAINING.importance_sample_size=9", *RUNS[name])
    m = KAEM(cfg, (1, 3, 4), BE, seed=0)
    randomise(m, BE.rng(1), scale=0.2)
    return m


def _step(name, comm=None, parallel="data"):
    """One gradient evaluation: (loss, gradients, diag, the next shared numbers, state)."""
    m = _model(name)
    x = np.random.default_rng(2).random((B, m.D))
    rng, state = BE.rng(3), {"step_size": [0.02, 0.03, 0.05][:3 if "thermo" in name else 1]} if "automala" in name else {}
    split = None if comm is None else Split.of(comm, B, parallel)
    xs = x if split is None else x[split.lo:split.hi]
    loss, diag = training_step(m, xs, rng, iteration=1, n_updates=10, state=state, split=split)
    return float(loss), {k: v.copy() for k, v in m.gradients().items()}, diag, rng.random(4), state


@pytest.mark.parametrize("name,ranks,parallel", [(n, 2, "data") for n in RUNS] + [
    ("is", 3, "data"), ("thermo", 3, "temperatures"), ("thermo", 2, "temperatures"),
    ("thermo-automala-right", 2, "temperatures"), ("thermo-automala-right", 3, "data")])
def test_ranks_shares_sum_to_the_one_process_step(name, ranks, parallel):
    loss, grads, diag, after, state = _step(name)
    parts = run_ranks(ranks, lambda comm: _step(name, comm, parallel))
    assert abs(sum(p[0] for p in parts) - loss) < 1e-12 * abs(loss)
    for k in grads:
        assert rel_error(sum(p[1][k] for p in parts), grads[k]) < 1e-11, k
    for p in parts:  # every rank: the same diagnostics, samples, state and next random numbers
        np.testing.assert_array_equal(p[3], after)
        for key in ("z", "w"):
            assert rel_error(p[2][key], diag[key]) < 1e-12, key
        for key in ("ess", "resampled", "accept", "step", "swap"):
            if key in diag and np.isfinite(diag[key]):
                assert abs(float(p[2][key]) - float(diag[key])) < 1e-12 * max(1.0, abs(float(diag[key]))), key
        if "step_size" in state:
            assert rel_error(p[4]["step_size"], state["step_size"]) < 1e-12


# ---- checkpoints of the earlier layout of random numbers -----------------------------------

def test_a_checkpoint_of_the_earlier_random_layout_samples_and_evaluates_but_is_not_resumed(data_dir, tmp_path, capsys):
    """A checkpoint without meta.streams (written before the random numbers were drawn by
    row) still samples and evaluates; resuming it is refused with one line saying why."""
    import json

    import cli
    from conftest import TINY_CLI, one_error_line

    out = tmp_path / "run"
    assert cli.main(["train", "--dataset", "fmnist", "--data-dir", data_dir, "--no-download", "--n-train", "40",
                     "--n-test", "20", "--batch-size", "20", "--max-iters", "1", "--out", str(out), *TINY_CLI]) == 0
    path = str(out / "ckpt.npz")
    with np.load(path) as z:
        entries = {k: z[k] for k in z.files}
    meta = json.loads(str(entries["meta"]))
    del meta["streams"], meta["ranks"], meta["parallel"]
    entries["meta"] = np.array(json.dumps(meta))
    np.savez(path, **entries)
    capsys.readouterr()
    assert cli.main(["sample", "--ckpt", path, "--n", "4", "--out", str(tmp_path / "s.png")]) == 0
    assert cli.main(["eval", "--ckpt", path, "--estimator", "is", "--samples", "10", "--json"]) == 0
    capsys.readouterr()
    before = open(path, "rb").read()
    assert cli.main(["train", "--resume", path, "--max-iters", "2"]) == 1
    one_error_line(capsys, "earlier version", "cannot be resumed")
    assert open(path, "rb").read() == before
