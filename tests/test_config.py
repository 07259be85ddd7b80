"""Tests for kaem/config.py: defaults, layering, aliases, errors, round trip."""
from __future__ import annotations

from pathlib import Path

import pytest

from kaem.nn import bases
from kaem.config import (DATASET_DEFAULTS, SCHEMA, Config, ConfigError, config_from_ini,
                         config_to_ini, default_config, format_value, load_config)


def write_ini(tmp_path: Path, text: str) -> str:
    """Write ``text`` to a config file and return its path."""
    path = tmp_path / "run.ini"
    path.write_text(text, encoding="utf-8")
    return str(path)


# --- defaults --------------------------------------------------------------------------

def test_defaults_typed() -> None:
    cfg = default_config("mnist")
    assert cfg["EbmModel"]["grid_size"] == 20
    assert cfg["EbmModel"]["layer_widths"] == (20, 41)
    assert cfg["EbmModel"]["grid_range"] == (-1.2, 1.2)
    assert cfg["EbmModel"]["π_0"] == "ebm"
    assert cfg["EbmModel"]["τ_trainable"] is True
    assert cfg["EbmModel"]["spline_function"] == "RBF"
    assert cfg["GeneratorModel"]["widths"] == (41, 82)
    assert cfg.get("TRAINING", "batch_size") == 100
    assert cfg.get("TRAINING", "eps") == pytest.approx(1e-4)
    assert cfg.get("POST_LANGEVIN", "step_size_bounds") == (0.0001, 10.0)
    assert cfg.get("OPTIMIZER", "learning_rate") == pytest.approx(1e-3)


def test_every_dataset_builds_and_validates() -> None:
    for name in DATASET_DEFAULTS:
        assert isinstance(default_config(name).validate(), Config)
    assert default_config("fmnist") == default_config("mnist")


def test_every_schema_default_is_valid() -> None:
    cfg = default_config("mnist")
    for section, fields in SCHEMA.items():
        for key, field in fields.items():
            cfg.set(section, key, format_value(field.default))


def test_get_accepts_ascii_alias() -> None:
    cfg = default_config("mnist")
    assert cfg.get("EbmModel", "init_tau") == cfg.get("EbmModel", "init_τ") == 1.0
    assert cfg.get("EbmModel", "pi_0") == "ebm"


def test_copy_is_independent() -> None:
    cfg = default_config("mnist")
    other = cfg.copy()
    other.set("EbmModel", "grid_size", "7")
    assert cfg["EbmModel"]["grid_size"] == 20
    assert other["EbmModel"]["grid_size"] == 7


# --- layering --------------------------------------------------------------------------

def test_ini_file_overrides_only_present_keys(tmp_path: Path) -> None:
    path = write_ini(tmp_path, """
[EbmModel]
layer_widths = 40, 81
grid_size = 30   # inline comment
π_0 = gaussian
ε_scale = 0.2
τ_trainable = no

[GeneratorModel]
widths = 81, 162

[TRAINING]
dtype = float64
""")
    cfg = load_config("mnist", path)
    assert cfg["EbmModel"]["layer_widths"] == (40, 81)
    assert cfg["EbmModel"]["grid_size"] == 30
    assert cfg["EbmModel"]["π_0"] == "gaussian"
    assert cfg["EbmModel"]["ε_scale"] == 0.2
    assert cfg["EbmModel"]["τ_trainable"] is False
    assert cfg["GeneratorModel"]["widths"] == (81, 162)
    assert cfg["TRAINING"]["dtype"] == "float64"
    assert cfg["TRAINING"]["batch_size"] == 100  # untouched default
    assert cfg["EbmModel"]["spline_degree"] == 3


def test_ini_file_accepts_ascii_alias(tmp_path: Path) -> None:
    path = write_ini(tmp_path, "[EbmModel]\ninit_tau = 2.5\n")
    assert load_config("mnist", path)["EbmModel"]["init_τ"] == 2.5


def test_ini_file_rejects_key_given_twice(tmp_path: Path) -> None:
    path = write_ini(tmp_path, "[EbmModel]\ninit_tau = 2.5\ninit_τ = 3\n")
    with pytest.raises(ConfigError, match="given twice"):
        load_config("mnist", path)


def test_set_overrides_after_file(tmp_path: Path) -> None:
    path = write_ini(tmp_path, "[EbmModel]\ngrid_size = 30\n")
    cfg = load_config("mnist", path, ["EbmModel.grid_size=12",
                                      "EbmModel.init_τ=0.5",
                                      "EbmModel.init_tau = 1",
                                      "GeneratorModel.sigma_base=2",
                                      "POST_LANGEVIN.autoMALA_eta_changerate=3",
                                      "TRAINING.eps=1e-6",
                                      "EbmModel.grid_range=-2, 2",
                                      "EbmModel.pi_0=uniform"])
    assert cfg["EbmModel"]["grid_size"] == 12
    assert cfg["EbmModel"]["init_τ"] == 1.0
    assert cfg["GeneratorModel"]["σ_base"] == 2.0
    assert cfg["POST_LANGEVIN"]["autoMALA_η_changerate"] == 3.0
    assert cfg["TRAINING"]["eps"] == 1e-6
    assert cfg["EbmModel"]["grid_range"] == (-2.0, 2.0)
    assert cfg["EbmModel"]["π_0"] == "uniform"
    assert "init_tau" not in cfg["EbmModel"]  # stored under the canonical name


def test_bool_and_choice_spellings() -> None:
    cfg = default_config("mnist")
    for raw, expected in [("true", True), ("0", False), ("YES", True), ("No", False)]:
        cfg.set("TRAINING", "update_grid", raw)
        assert cfg["TRAINING"]["update_grid"] is expected
    cfg.set("EbmModel", "base_activation", "GELU")
    assert cfg["EbmModel"]["base_activation"] == "gelu"


# --- errors ----------------------------------------------------------------------------

def test_unknown_dataset_lists_valid() -> None:
    with pytest.raises(ConfigError) as err:
        default_config("cifar99")
    assert "cifar99" in str(err.value) and "mnist" in str(err.value)
    assert "fmnist" in str(err.value)


def test_unknown_section_suggests_case_and_lists_sections() -> None:
    with pytest.raises(ConfigError) as err:
        load_config("mnist", overrides=["ebmmodel.grid_size=3"])
    msg = str(err.value)
    assert "'ebmmodel'" in msg and "did you mean 'EbmModel'" in msg
    assert "GeneratorModel" in msg and "THERMODYNAMIC_INTEGRATION" in msg


def test_unknown_section_in_file(tmp_path: Path) -> None:
    path = write_ini(tmp_path, "[Training]\nbatch_size = 3\n")
    with pytest.raises(ConfigError) as err:
        load_config("mnist", path)
    msg = str(err.value)
    assert path in msg and "'Training'" in msg and "did you mean 'TRAINING'" in msg


def test_unknown_key_lists_section_keys() -> None:
    with pytest.raises(ConfigError) as err:
        load_config("mnist", overrides=["EbmModel.grid_sise=3"])
    msg = str(err.value)
    assert "grid_sise" in msg and "did you mean 'grid_size'" in msg
    assert "layer_widths" in msg and "π_0" in msg and "shared_uniform" in msg


@pytest.mark.parametrize("override, bad, expected", [
    ("EbmModel.grid_size=abc", "abc", "an integer >= 2"),
    ("EbmModel.grid_size=1", "1", "an integer >= 2"),
    ("EbmModel.grid_size=2.5", "2.5", "an integer"),
    ("EbmModel.init_τ=0", "0", "a finite float > 0"),
    ("EbmModel.grid_update_ratio=1.5", "1.5", ">= 0 and <= 1"),
    ("TRAINING.eps=nan", "nan", "a finite float > 0"),
    ("EbmModel.τ_trainable=maybe", "maybe", "true/false/1/0/yes/no"),
    ("EbmModel.grid_range=1, -1", "1, -1", "lo < hi"),
    ("EbmModel.grid_range=1", "1", "two comma-separated floats"),
    ("EbmModel.layer_widths=20", "20", "at least 2 integer"),
    ("EbmModel.layer_widths=20,,41", "20,,41", "comma-separated list"),
    ("GeneratorModel.widths=41, 0", "41, 0", ">= 1"),
])
def test_bad_value_names_value_and_expected(override: str, bad: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config("mnist", overrides=[override])
    msg = str(err.value)
    assert repr(bad) in msg and expected in msg


def test_bad_choice_lists_choices() -> None:
    with pytest.raises(ConfigError) as err:
        load_config("mnist", overrides=["EbmModel.base_activation=softplus"])
    msg = str(err.value)
    assert "softplus" in msg and "silu" in msg and "hardswish" in msg and "none" in msg


@pytest.mark.parametrize("override", ["EbmModel.grid_size", "grid_size=3", ".grid_size=3",
                                      "EbmModel.=3"])
def test_malformed_override_shows_form(override: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config("mnist", overrides=[override])
    assert repr(override) in str(err.value) and "SECTION.key=value" in str(err.value)


def test_missing_file_names_path(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.ini")
    with pytest.raises(ConfigError) as err:
        load_config("mnist", path)
    assert path in str(err.value)


def test_unparsable_file_names_path(tmp_path: Path) -> None:
    path = write_ini(tmp_path, "grid_size = 3\n")  # no section header
    with pytest.raises(ConfigError) as err:
        load_config("mnist", path)
    assert path in str(err.value)


def test_bad_value_in_file_names_path_and_key(tmp_path: Path) -> None:
    path = write_ini(tmp_path, "[OPTIMIZER]\nlearning_rate = -1\n")
    with pytest.raises(ConfigError) as err:
        load_config("mnist", path)
    msg = str(err.value)
    assert path in msg and "OPTIMIZER.learning_rate" in msg and "> 0" in msg


# --- cross-checks and unbuilt features -------------------------------------------------

def test_generator_must_start_with_q() -> None:
    with pytest.raises(ConfigError) as err:
        load_config("mnist", overrides=["EbmModel.layer_widths=40, 81"])
    msg = str(err.value)
    assert "GeneratorModel.widths" in msg and "EbmModel.layer_widths" in msg
    assert "41" in msg and "81" in msg
    cfg = load_config("mnist", overrides=["EbmModel.layer_widths=40, 81",
                                          "GeneratorModel.widths=81, 162"])
    assert cfg["GeneratorModel"]["widths"][0] == cfg["EbmModel"]["layer_widths"][-1]


def test_mixture_section_and_its_unbuilt_options() -> None:
    """[MixtureModel] with the reference's keys; an active value of an unbuilt option is one
    error naming it; inactive values are accepted."""
    cfg = load_config("mnist", overrides=["MixtureModel.use_mixture_prior=true", "MixtureModel.train_proportions=true",
                                          "MixtureModel.lambda_reg=0", "MixtureModel.use_attention_kernel=false"])
    assert cfg["MixtureModel"]["use_mixture_prior"] and cfg["MixtureModel"]["λ_reg"] == 0.0
    with pytest.raises(ConfigError, match="use_attention_kernel = true.*not built.*use false"):
        load_config("mnist", overrides=["MixtureModel.use_attention_kernel=true"])
    with pytest.raises(ConfigError, match="λ_reg = 0.5.*not built.*use 0"):
        load_config("mnist", overrides=["MixtureModel.λ_reg=0.5"])
    with pytest.raises(ConfigError, match="unknown key 'mixture_model'"):
        load_config("mnist", overrides=["EbmModel.mixture_model=true"])


def test_stored_config_from_before_the_mixture_section_loads() -> None:
    """Checkpoints written before [MixtureModel] hold EbmModel.mixture_model = false and no
    [MixtureModel]: they mean the univariate prior, and load as such."""
    text = config_to_ini(default_config("mnist"))
    old = text[:text.index("[MixtureModel]")] + text[text.index("[GeneratorModel]"):]
    old = old.replace("shared_uniform = true\n", "mixture_model = false\nshared_uniform = true\n")
    assert config_from_ini(old) == default_config("mnist")
    with pytest.raises(ConfigError, match="mixture_model"):
        config_from_ini(old.replace("mixture_model = false", "mixture_model = true"))



def test_stored_config_from_before_noise_sharing_keeps_pair() -> None:
    """Checkpoints written before GeneratorModel.noise_sharing drew ξ per (datum, sample):
    they load as `pair` whatever today's default is."""
    sample = load_config("mnist", overrides=["GeneratorModel.noise_sharing=sample"])
    old = config_to_ini(sample).replace("noise_sharing = sample\n", "")
    assert "noise_sharing" not in old
    assert config_from_ini(old)["GeneratorModel"]["noise_sharing"] == "pair"
    assert config_from_ini(old) == load_config("mnist", overrides=["GeneratorModel.noise_sharing=pair"])


# --- registry of bases -----------------------------------------------------------------

def test_runtime_registered_basis_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(bases.BASES, "MyBasis", bases.RBF)
    cfg = load_config("mnist", overrides=["GeneratorModel.spline_function=MyBasis"])
    assert cfg["GeneratorModel"]["spline_function"] == "MyBasis"


def test_unknown_basis_lists_registered_names() -> None:
    with pytest.raises(ConfigError) as err:
        load_config("mnist", overrides=["EbmModel.spline_function=Wavelet"])
    msg = str(err.value)
    assert "Wavelet" in msg
    for name in bases.BASES:
        assert name in msg


# --- round trip ------------------------------------------------------------------------

def test_round_trip_defaults_and_changed_values() -> None:
    cfg = load_config("mnist", overrides=["TRAINING.eps=1e-7",
                                          "EbmModel.grid_range=-1.5, 0.1",
                                          "EbmModel.ε_scale=0.30000000000000004",
                                          "POST_LANGEVIN.use_autoMALA=true"])
    text = config_to_ini(cfg)
    back = config_from_ini(text)
    assert back == cfg
    assert config_to_ini(back) == text
    assert "init_τ = 1.0" in text and "π_0 = ebm" in text


def test_from_ini_requires_every_key() -> None:
    text = config_to_ini(default_config("mnist")).replace("grid_update_decay = 0.999\n", "")
    with pytest.raises(ConfigError, match="GRID_UPDATING.grid_update_decay"):
        config_from_ini(text)


def test_iterating_a_config_gives_its_section_names():
    cfg = load_config("mnist")
    names = list(cfg)
    assert "EbmModel" in names and "TRAINING" in names
    assert {s: dict(cfg[s]) for s in cfg}["TRAINING"]["batch_size"] == cfg["TRAINING"]["batch_size"]
