"""Hostile files and absurd settings through the CLI: every checkpoint that is valid .npz
but wrong inside, every fuzzed config value and every setting too large for memory ends
with exactly one "error:" line naming the file and field (or key), a non-zero exit, the
file untouched and nothing written to --out. No case may reach the catch-all handler
("internal error"): each has its own message."""
from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest

import cli
from conftest import PAIR, TINY_CLI, one_error_line
from kaem.config import SCHEMA, ConfigError, load_config

TINY = TINY_CLI


def _sha(path):
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


@pytest.fixture(scope="module")
def good(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("good")
    assert cli.main(["train", "--dataset", "fmnist", "--data-dir", data_dir, "--no-download", "--n-train", "40",
                     "--n-test", "10", "--batch-size", "20", "--epochs", "1", "--out", str(out), *TINY]) == 0
    with np.load(out / "ckpt.npz") as z:
        return {k: z[k] for k in z.files}


def _write(path, entries):
    with open(path, "wb") as fh:
        np.savez(fh, **entries)


def _meta(good, **changes):
    meta = json.loads(str(good["meta"]))
    for k, v in changes.items():
        if v is KeyError:
            del meta[k]
        else:
            meta[k] = v
    return {**good, "meta": np.array(json.dumps(meta))}


def _entries(good, drop=(), **changes):
    out = {k: v for k, v in good.items() if k not in drop}
    out.update(changes)
    return out


def _case_list(good):
    """(name, entries, words the error must contain)."""
    m = "param/prior.coef" if "param/prior.coef" in good else next(k for k in good if k.startswith("param/"))
    a = next(k for k in good if k.startswith("optim/m/"))
    v = next(k for k in good if k.startswith("optim/v/"))
    return [
        ("meta is a list", _entries(good, meta=np.array("[1, 2]")), ["meta", "JSON object"]),
        ("meta is not JSON", _entries(good, meta=np.array("{iteration")), ["meta", "JSON"]),
        ("meta lacks data_shape", _meta(good, data_shape=KeyError), ["meta.data_shape", "missing"]),
        ("resume: meta lacks iteration", _meta(good, iteration=KeyError), ["meta.iteration", "missing"]),
        ("iteration is text", _meta(good, iteration="ten"), ["meta.iteration"]),
        ("iteration is negative", _meta(good, iteration=-3), ["meta.iteration"]),
        ("iteration is a bool", _meta(good, iteration=True), ["meta.iteration"]),
        ("unknown dataset", _meta(good, dataset="cifar"), ["meta.dataset"]),
        ("data: wrong data shape", _meta(good, data_shape=[1, 2, 3]), ["meta.data_shape"]),
        ("bad dtype", _meta(good, dtype="float16"), ["meta.dtype"]),
        ("garbage rng state", _meta(good, rng_state={"bit_generator": "PCG64", "state": "x"}), ["meta.rng_state"]),
        ("foreign rng", _meta(good, rng_state={"bit_generator": "MT19937", "state": {"key": [1], "pos": 0}}),
         ["meta.rng_state"]),
        ("rng state a list", _meta(good, rng_state=[1, 2]), ["meta.rng_state"]),
        ("sampler state garbage", _meta(good, sampler_state={"step_size": ["x"]}), ["meta.sampler_state"]),
        ("mode mismatch", _meta(good, mode="thermo"), ["meta.mode"]),
        ("grid update after iteration", _meta(good, last_grid_update=10 ** 6), ["meta.last_grid_update"]),
        (".npy renamed .npz", None, ["single .npy array"]),
        ("no format tag", _entries(good, drop=("format",)), ["not a KAEM checkpoint"]),
        ("version 99", _entries(good, version=np.array(99)), ["version 99"]),
        ("version as an array", _entries(good, version=np.array([1, 1])), ["version"]),
        ("config garbage", _entries(good, config=np.array("[EbmModel\nnonsense")), ["config"]),
        ("config missing a key", _entries(good, config=np.array(str(good["config"]).replace("grid_size = 3\n", "", 1))),
         ["config", "missing"]),
        ("unexpected entry", _entries(good, **{"evil/x": np.ones(2)}), ["evil/x", "unexpected"]),
        ("parameter wrong shape", _entries(good, **{m: np.ones((1, 2))}), [m, "shape"]),
        ("parameter missing", _entries(good, drop=(m,)), [m, "missing"]),
        ("extra parameter", _entries(good, **{"param/gen.9.w": np.ones(2, np.float32)}), ["param/gen.9.w", "unexpected"]),
        ("parameter dtype", _entries(good, **{m: good[m].astype(np.float64)}), [m, "float64"]),
        ("parameter text", _entries(good, **{m: np.array(["a", "b"])}), [m, "dtype"]),
        ("NaN parameter", _entries(good, **{m: np.full_like(good[m], np.nan)}), [m, "NaN or inf"]),
        ("resume: optimiser state wrong shape", _entries(good, **{a: np.ones(3, np.float32)}), ["optimiser state", a]),
        ("resume: optimiser state missing", _entries(good, drop=(v,)), ["optimiser state", v]),
        ("resume: optimiser step garbage", _entries(good, **{"optim/t": np.array([1, 2])}), ["optimiser state", "optim/t"]),
        ("resume: negative second moments", _entries(good, **{v: -np.ones_like(good[v])}), ["optimiser state", "negative"]),
        ("resume: another optimiser's state", _entries(good, **{"optim/type": np.array("sgd")}),
         ["optim/type", "'sgd'", "OPTIMIZER.type is 'adam'"]),
        ("optimiser type not one string", _entries(good, **{"optim/type": np.array(["adam", "sgd"])}),
         ["optim/type", "single string"]),
    ]


def test_every_malformed_checkpoint_is_one_error_line(good, data_dir, tmp_path, capsys):
    for name, entries, words in _case_list(good):
        path = tmp_path / "bad.npz"
        if entries is None:
            with open(path, "wb") as fh:
                np.save(fh, np.ones(3))
        else:
            _write(path, entries)
        before = _sha(path)
        commands = [["train", "--resume", str(path), "--data-dir", data_dir, "--no-download", "--n-test", "10",
                     "--out", str(tmp_path / "never")]]
        if not name.startswith("resume:"):  # what only training needs
            commands.append(["eval", "--ckpt", str(path), "--data-dir", data_dir, "--no-download", "--n-test", "10"])
        if not name.startswith(("resume:", "data:")):  # what only the data need
            commands.append(["sample", "--ckpt", str(path), "--out", str(tmp_path / "never.png")])
        for cmd in commands:
            code = cli.main(cmd)
            assert code != 0, (name, cmd[0])
            line = one_error_line(capsys, *words)
            assert str(path) in line or repr(str(path)) in line, (name, line)
        assert _sha(path) == before, name
        assert not (tmp_path / "never").exists() and not (tmp_path / "never.png").exists(), name


def test_random_byte_damage_and_random_metadata_are_clean_errors(good, tmp_path, capsys):
    """Fuzz: flipped bytes anywhere in the file, and random JSON values in every field."""
    rng = np.random.default_rng(5)
    path = tmp_path / "fuzz.npz"
    _write(path, good)
    raw = path.read_bytes()
    values = [None, True, -1, 0, 2 ** 70, 1.5, float("nan"), "", "x" * 300, [], [1, "a"], {}, {"a": 1}]
    meta = json.loads(str(good["meta"]))
    cases = 0
    for _ in range(12):
        b = bytearray(raw)
        for pos in rng.integers(0, len(b), 3):
            b[pos] ^= 0xFF
        path.write_bytes(bytes(b))
        code = cli.main(["sample", "--ckpt", str(path), "--out", str(tmp_path / "s.png")])
        if code:
            one_error_line(capsys, str(path))
            cases += 1
        else:
            capsys.readouterr()
    for key in meta:
        for v in (values[i] for i in rng.choice(len(values), 3, replace=False)):
            _write(path, _meta(good, **{key: v}))
            if cli.main(["sample", "--ckpt", str(path), "--out", str(tmp_path / "s.png")]):
                one_error_line(capsys, str(path))
                cases += 1
            else:
                capsys.readouterr()
    assert cases > 20  # most damage is caught, none escapes as a traceback


@pytest.mark.parametrize("settings,needle", [
    (["TRAINING.batch_size=1000000000"], "batch_size"),
    (["TRAINING.importance_sample_size=1000000000"], "importance_sample_size"),
    (["EbmModel.GaussQuad_nodes=1000000000"], "GaussQuad_nodes"),
    (["GeneratorModel.grid_size=1000000000"], "grid_size"),
    (["GeneratorModel.widths=3,1000000000"], "widths"),
    (["TRAINING.eval_importance_samples=1000000000"], "eval_importance_samples"),
    # within the schema's bounds, but far beyond any machine's memory with pair noise
    # (2·B·S·D buffers): the estimate says so
    (["TRAINING.importance_sample_size=1000000", PAIR], "importance_sample_size"),
    (["GeneratorModel.widths=3,100000", "GeneratorModel.grid_size=10000"], "GeneratorModel"),
])
def test_absurd_sizes_fail_before_anything_is_written(settings, needle, data_dir, tmp_path, capsys):
    out = tmp_path / "out"
    sets = [a for s in settings for a in ("--set", s)]
    code = cli.main(["train", "--dataset", "fmnist", "--data-dir", data_dir, "--no-download", "--out", str(out),
                     *TINY, *sets])
    assert code == 2
    line = one_error_line(capsys, needle)
    assert "GiB" in line or "<=" in line
    assert not out.exists()


def test_fuzzed_config_values_raise_only_config_errors():
    """Random strings, huge, negative and non-finite numbers for every key: a ConfigError or
    a valid config, never anything else."""
    rng = np.random.default_rng(7)
    junk = ["", " ", "nan", "inf", "-inf", "1e400", "-1", "0", "10000000000000000000000", "1.5", "abc",
            "1,2,3", ",", "true", "None", "🙂", "2,", "0x10", "1e-400"]
    for section, fields in SCHEMA.items():
        for key in fields:
            for raw in rng.choice(junk, 8, replace=False):
                try:
                    load_config("mnist", overrides=[f"{section}.{key}={raw}"])
                except ConfigError as e:
                    assert key in str(e) or "GeneratorModel.widths" in str(e)


def test_unexpected_exception_is_one_line_and_debug_shows_it(monkeypatch, capsys):
    def broken(args):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(cli, "cmd_sample", broken)
    assert cli.main(["sample", "--ckpt", "x.npz"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: internal error ZeroDivisionError: a bug") and "--debug" in err[0]
    with pytest.raises(ZeroDivisionError):
        cli.main(["--debug", "sample", "--ckpt", "x.npz"])


def test_memory_error_is_one_line(monkeypatch, capsys):
    def hungry(args):
        raise MemoryError()

    monkeypatch.setattr(cli, "cmd_eval", hungry)
    assert cli.main(["eval", "--ckpt", "x.npz"]) == 1
    one_error_line(capsys, "out of memory", "batch_size")


def test_cli_integer_bounds(capsys):
    for argv in (["sample", "--ckpt", "x", "--n", "1000000000"], ["eval", "--ckpt", "x", "--samples", "0"],
                 ["train", "--seed", "-1"], ["train", "--epochs", "ten"]):
        with pytest.raises(SystemExit) as e:
            cli.main(argv)
        assert e.value.code == 2 and "expected an integer from" in capsys.readouterr().err
