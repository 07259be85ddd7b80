"""Compatibility of the key names: the reference's INI files and older stored configs.

- Greek letters in key names may be written in ASCII (``init_tau`` for ``init_τ``);
  ``resolve_section`` / ``resolve_key`` map a written name to the schema's, or raise a
  ConfigError that lists the valid names.
- ``INERT_KEYS``: keys of the reference's files for features not built here, accepted
  (when they ask for nothing) and dropped.
- ``LATER_KEYS`` / ``RETIRED_KEYS``: keys added to or removed from the schema since
  checkpoints were first written, so that older stored configs still read.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from kaem.config.schema import SCHEMA, ConfigError, flag
from kaem.config.values import expected_text, format_value, parse_bool

# ASCII spellings of the Greek letters used in key names.
GREEK_TO_ASCII = {"ε": "eps", "μ": "mu", "σ": "sigma", "τ": "tau", "π": "pi",
                  "λ": "lambda", "η": "eta", "ρ": "rho"}


def ascii_alias(key: str) -> str:
    """The key with its Greek letters spelled out (``init_τ`` -> ``init_tau``)."""
    for greek, latin in GREEK_TO_ASCII.items():
        key = key.replace(greek, latin)
    return key


# ---------------------------------------------------------------------------------------
# Reference keys of features not built here ("accepted but inert")
# ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Inert:
    """A key of the reference's INI files that this package accepts without using it.

    ``inactive`` is the value that asks for nothing (``false`` for a switch, ``FP32`` for a
    precision); another value is a ConfigError naming ``feature``. ``inactive = None``
    accepts any value: the key has no effect here and ``feature`` says why. Inert values
    are checked, then dropped: they are not part of a Config, nor of a checkpoint's config.
    """

    feature: str
    inactive: Any = None


def _off(feature: str) -> Inert:
    """A switch of an unbuilt feature: only ``false`` is accepted."""
    return Inert(feature, False)


def _ignored(why: str) -> Inert:
    """A key with no effect here: any value is accepted."""
    return Inert(why)


def _all_ignored(why: str, *keys: str) -> dict:
    return {key: _ignored(why) for key in keys}


_FP32 = Inert("mixed precision (the float type is TRAINING.dtype)", "FP32")

# Every key of the reference's files (tests/fixtures/reference-configs/) that SCHEMA lacks.
# A SCHEMA key always wins over an entry here: when a feature is built, its keys move to
# SCHEMA and leave this table (tests/test_reference_configs.py checks there is no overlap).
INERT_KEYS: dict = {
    "EbmModel": {"layernorm": _off("layer normalisation in the KAN layers")},
    "GeneratorModel": {"layernorm": _off("layer normalisation in the KAN layers"),
                       "perceptual_scale": _ignored("the perceptual loss is off")},
    "TRAINING": {"use_perceptual_loss": _off("the perceptual loss"),
                 "num_generated_samples": _ignored("samples are drawn by `cli.py sample --n`"),
                 "batch_size_for_gen": _ignored("`cli.py sample` batches by itself"),
                 "use_gpu": _ignored("the device is chosen by --device"),
                 "dataset": _ignored("the dataset is chosen by --dataset or --preset"),
                 "verbose": _ignored("progress is always printed")},
    "OPTIMIZER": {"l-bfgs_memory": _ignored("L-BFGS is not an OPTIMIZER.type here")},
    "LINE_SEARCH": _all_ignored("line search is for L-BFGS, not an OPTIMIZER.type here",
                                "type", "c_1", "c_2", "rho"),
    "MIXED_PRECISION": {"full_precision": _FP32, "reduced_precision": _FP32,
                        "loss_scaling": _ignored("FP32 needs no loss scaling")},
    "PCA": {"use_pca": _off("PCA of the data"), "pca_components": _ignored("PCA is off")},
    "SYMBOLIC_REG": {"regularize_prior": _off("symbolic regularisation of the KAN functions"),
                     "regularize_gen": _off("symbolic regularisation of the KAN functions"),
                     **_all_ignored("symbolic regularisation is off", "nonlin_threshold", "reg_factor",
                                    "λ_total", "λ_l1", "λ_entropy", "λ_coef", "λ_coefdiff")},
    "SEQ": _all_ignored("text (sequence) data are not built; image data ignore [SEQ]",
                        "sequence_length", "vocab_size", "activation", "d_model"),
    "TUNING": _all_ignored("hyperparameter tuning is not built", "sampler", "num_trials"),
}


def inert_entry(section: str, key: str) -> Optional[tuple]:
    """(canonical key, Inert) if ``section.key`` (ASCII aliases allowed) is an inert
    reference key, None otherwise, and always None for a SCHEMA key."""
    if section in SCHEMA and any(key in (k, ascii_alias(k)) for k in SCHEMA[section]):
        return None
    for name, spec in INERT_KEYS.get(section, {}).items():
        if key in (name, ascii_alias(name)):
            return name, spec
    return None


def check_inert(section: str, key: str, spec: Inert, raw: str) -> None:
    """Accept an inert key's value if it asks for nothing; else a ConfigError naming the
    feature and the value to use."""
    if spec.inactive is None:
        return
    text = raw.strip()
    if isinstance(spec.inactive, bool):
        try:
            active = parse_bool(text) != spec.inactive
        except ValueError:
            raise ConfigError(f"bad value {text!r} for {section}.{key}: expected "
                              f"{expected_text(flag(False))}") from None
    else:
        active = text.lower() != spec.inactive.lower()
    if active:
        raise ConfigError(f"{section}.{key} = {text} asks for {spec.feature}, which this package "
                          f"does not build; use {format_value(spec.inactive)} (or leave the key out)")


# ---------------------------------------------------------------------------------------
# Name resolution: a written section or key (ASCII aliases allowed) -> the schema's name
# ---------------------------------------------------------------------------------------

def _suggestion(name: str, valid: Sequence[str]) -> str:
    """' (did you mean X?)' for a case-insensitive or close match, else ''."""
    same_case = [v for v in valid if v.lower() == name.lower()]
    close = same_case or difflib.get_close_matches(name, list(valid), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def resolve_section(section: str) -> str:
    """Check a section name (case-sensitive) and return it."""
    if section in SCHEMA:
        return section
    valid = list(SCHEMA) + [s for s in INERT_KEYS if s not in SCHEMA]
    raise ConfigError(f"unknown section {section!r}{_suggestion(section, valid)}; "
                      f"valid sections: {', '.join(valid)}")


def resolve_key(section: str, key: str) -> str:
    """Return the canonical (unicode) name of ``key`` in ``section``; accepts ASCII aliases."""
    fields = {} if section in INERT_KEYS and section not in SCHEMA else SCHEMA[resolve_section(section)]
    if key in fields:
        return key
    for canonical in fields:
        if ascii_alias(canonical) == key:
            return canonical
    valid = list(fields) + list(INERT_KEYS.get(section, {}))
    raise ConfigError(f"unknown key {key!r} in section [{section}]"
                      f"{_suggestion(key, valid + [ascii_alias(k) for k in valid])}; "
                      f"valid keys: {', '.join(valid)} "
                      f"(Greek letters may be written as {_alias_help()})")


def _alias_help() -> str:
    return ", ".join(f"{g}={a}" for g, a in GREEK_TO_ASCII.items())


# ---------------------------------------------------------------------------------------
# Stored configs written by older versions (read by config_from_ini)
# ---------------------------------------------------------------------------------------

# Keys added after checkpoints were first written: a stored config without one takes the
# value that does what the code did before the key existed: None means the schema default
# (gen_every only adds sample grids; the mixture prior and the CNN and MLP generators are off
# unless switched on; the optimiser keys default to the Adam that was the only one, no
# schedule); a string pins the old behaviour even if the default changes.
LATER_KEYS = ({("TRAINING", "gen_every"): None,
               ("MixtureModel", "use_mixture_prior"): None, ("MixtureModel", "train_proportions"): None,
               ("MixtureModel", "λ_reg"): None, ("MixtureModel", "use_attention_kernel"): None,
               ("GeneratorModel", "noise_sharing"): "pair",  # ξ per (datum, sample) before the key
               ("EbmModel", "deep_body"): None}  # only read by the deep prior, which came later
              | {("OPTIMIZER", k): None for k in ("betas", "ε", "ρ", "decay")}
              | {(s, k): None for s in ("CNN", "MLP", "LR_SCHEDULE") for k in SCHEMA[s]})
# Keys removed since, with the one value a stored config can hold: dropped on reading.
RETIRED_KEYS = {("EbmModel", "mixture_model"): "false"}  # a placeholder that refused true
