"""The reference's own INI files load with ``--config`` or fail with one clear line.

tests/fixtures/reference-configs/ holds unchanged copies of every INI file of the two Julia
repositories (provenance and licences in its README). ``EXPECTED`` states each file's
outcome today: None = it loads and builds a model for its data (``DATA``: the file name's
first word), else a piece of its one-line error.
When a feature lands (mixture prior, conv generator, deep prior, ...), whoever lands it
updates the expectations of the files it unlocks, and moves the feature's keys from
``kaem.config.INERT_KEYS`` to ``SCHEMA``.
"""
from __future__ import annotations

import glob
import os

import numpy as np
import pytest

from kaem.backend import get_backend
from kaem.config import INERT_KEYS, SCHEMA, ConfigError, ascii_alias, load_config
from kaem.datasets import dataset_shape
from kaem.model import KAEM

HERE = os.path.dirname(os.path.abspath(__file__))
REF = os.path.join(HERE, "fixtures", "reference-configs")

# the deep prior tilts N(0, I); the files' flat "ebm" base is improper (presets svhn-pang,
# cifar10-pang, celeba-pang are these files with π_0 = gaussian), and two svhn files also
# switch the mixture prior on
_DEEP = "EbmModel.π_0 = ebm: the deep prior (layer_widths = 100, 200, 200, 1) tilts a standard normal"
_DEEP_MIX = "MixtureModel.use_mixture_prior = true and EbmModel.layer_widths = 100, 200, 200, 1 (the deep prior)"
_WIDTHS = "GeneratorModel.widths starts with 201 but EbmModel.layer_widths ends with Q = 81"  # the file's own bug
DATA = {"nist": "fmnist", "darcy": "darcy", "svhn": "svhn", "cifar": "cifar10", "celeba": "celeba",
        "text": "fmnist"}  # text data are not built: the reference ignores [SEQ] on images too
EXPECTED = {
    "pritraj1/celeba_config.ini": None,
    "pritraj1/celeba_pang_config.ini": _DEEP,
    "pritraj1/celeba_tuning_config.ini": None,
    "pritraj1/cifar_config.ini": None,
    "pritraj1/cifar_pang_config.ini": _DEEP,
    "pritraj1/darcy_flow_config.ini": None,
    "pritraj1/nist_config.ini": None,
    "pritraj1/nist_tuning_config.ini": None,
    "pritraj1/svhn_config.ini": None,
    "pritraj1/svhn_pang_config.ini": _DEEP_MIX,
    # machine-written by the reference's tuner: a key given twice in [cnn]
    "pritraj1/svhn_tuning_config.ini": "option 'activation' in section 'cnn' already exists",
    "pritraj1/text_config.ini": None,
    "thezettascale/celeba_config.ini": None,
    "thezettascale/celeba_pang_config.ini": _DEEP,
    "thezettascale/cifar_config.ini": None,
    "thezettascale/cifar_pang_config.ini": _DEEP,
    "thezettascale/darcy_flow_config.ini": _WIDTHS,
    "thezettascale/nist_config.ini": _WIDTHS,
    "thezettascale/svhn_config.ini": None,
    "thezettascale/svhn_pang_config.ini": _DEEP_MIX,
    "thezettascale/text_config.ini": None,
}
FILES = sorted(os.path.relpath(p, REF) for p in glob.glob(os.path.join(REF, "*", "*.ini")))


def test_every_reference_file_has_an_expectation():
    assert FILES and sorted(EXPECTED) == FILES


@pytest.mark.parametrize("name", FILES)
def test_reference_file_runs_or_says_why_in_one_line(name):
    path = os.path.join(REF, name)
    if EXPECTED[name] is None:
        cfg = load_config("mnist", path)
        model = KAEM(cfg, dataset_shape(DATA[os.path.basename(name).split("_")[0]]),
                     get_backend("cpu", "float32"), seed=0)
        assert model.parameters()
    else:
        with pytest.raises(ConfigError) as err:
            load_config("mnist", path)
        msg = str(err.value)
        assert "\n" not in msg and EXPECTED[name] in msg, msg


def test_built_and_inert_keys_never_overlap():
    """A built feature's keys live in SCHEMA only: delete them from INERT_KEYS."""
    for section, keys in INERT_KEYS.items():
        built = {k for k in SCHEMA.get(section, {})} | {ascii_alias(k) for k in SCHEMA.get(section, {})}
        assert not built & ({*keys} | {ascii_alias(k) for k in keys}), section


def _inert_cases():
    for section, keys in INERT_KEYS.items():
        for key, spec in keys.items():
            yield section, key, spec


@pytest.mark.parametrize("section,key,spec", list(_inert_cases()), ids=lambda v: v if isinstance(v, str) else "")
def test_inert_key_accepts_its_inactive_value_and_refuses_others(section, key, spec):
    default = load_config("fmnist")
    if spec.inactive is None:  # no effect: anything goes, nothing is stored
        for raw in ("1", "true", "x, y", ""):
            assert load_config("fmnist", overrides=[f"{section}.{ascii_alias(key)}={raw}"]) == default
        return
    inactive = "false" if spec.inactive is False else spec.inactive.lower()
    assert load_config("fmnist", overrides=[f"{section}.{key}={inactive}"]) == default
    active = "true" if spec.inactive is False else "FP16"
    with pytest.raises(ConfigError) as err:
        load_config("fmnist", overrides=[f"{section}.{key}={active}"])
    msg = str(err.value)
    assert f"{section}.{key} = {active} asks for {spec.feature}" in msg and "\n" not in msg, msg


def test_inert_keys_are_still_names_checked(tmp_path):
    ini = tmp_path / "c.ini"
    ini.write_text("[PCA]\nuse_pca = false\npca_component = 800\n")
    with pytest.raises(ConfigError, match="unknown key 'pca_component' in section \\[PCA\\].*did you mean 'pca_components'"):
        load_config("fmnist", str(ini))
    ini.write_text("[SEQQ]\nd_model = 1\n")
    with pytest.raises(ConfigError, match="did you mean 'SEQ'"):
        load_config("fmnist", str(ini))
    ini.write_text("[PCA]\nuse_pca = maybe\n")
    with pytest.raises(ConfigError, match="bad value 'maybe' for PCA.use_pca: expected a bool"):
        load_config("fmnist", str(ini))


def test_reference_quirks_num_temps_zero_and_checkpoint_every_minus_one():
    cfg = load_config("fmnist", os.path.join(REF, "pritraj1", "darcy_flow_config.ini"))
    from kaem.objectives import objective_mode

    assert cfg["THERMODYNAMIC_INTEGRATION"]["num_temps"] == 0 and objective_mode(cfg) == "is"
    assert cfg["TRAINING"]["checkpoint_every"] == -1
    assert cfg["OPTIMIZER"]["type"] == "nesterov" and cfg["LR_SCHEDULE"]["milestone_epochs"] == (100, 150, 200)


def test_nist_config_trains_as_is_through_the_cli(data_dir, tmp_path, capsys):
    """pritraj1/nist_config.ini unchanged (Nesterov, step decay at epochs 3, 6, 9), on a small
    data set and, for the test's time, a small model: 4 epochs of 4 iterations cross the
    first milestone. README shows the file's own model on real Fashion-MNIST."""
    import cli
    from kaem.run.checkpoint import load_checkpoint

    out = tmp_path / "run"
    assert cli.main(["train", "--dataset", "fmnist", "--config", os.path.join(REF, "pritraj1", "nist_config.ini"),
                     "--data-dir", data_dir, "--no-download", "--n-train", "200", "--n-test", "20",
                     "--batch-size", "50", "--epochs", "4", "--out", str(out),
                     "--set", "EbmModel.layer_widths=4,9", "--set", "GeneratorModel.widths=9,16",
                     "--set", "TRAINING.importance_sample_size=20", "--set", "TRAINING.eval_importance_samples=50"]) == 0
    assert "[epoch 3] learning rate 0.001 -> 0.0001" in capsys.readouterr().err
    ckpt = load_checkpoint(str(out / "ckpt.npz"))
    assert str(ckpt["optimizer"]["type"]) == "nesterov" and int(ckpt["optimizer"]["t"]) == 16
    assert np.isclose(float(ckpt["optimizer"]["lr"]), 1e-4)
