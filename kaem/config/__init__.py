"""Run configuration: INI files with the reference's sections and keys, typed and checked.

``load_config(preset, path, overrides)`` builds one in layers:

1. the schema's defaults (``schema.SCHEMA``);
2. the preset's overrides (``presets.DATASET_DEFAULTS``);
3. an INI file, of which only the keys present override;
4. ``--set SECTION.key=value`` overrides;
5. the cross-checks between keys (``checks``, run by ``Config.validate``).

Keys keep their unicode names (``init_τ``); ASCII aliases (``init_tau``) and the reference's
inert keys are resolved by ``compat``; each value is parsed and formatted by ``values``; the
Config object and INI reading/writing are in ``loader``. Every problem raises ConfigError,
naming the bad thing and listing the valid options.
"""
from kaem.config.checks import latent_size
from kaem.config.compat import INERT_KEYS, ascii_alias
from kaem.config.loader import Config, config_diff, config_from_ini, config_to_ini, default_config, load_config
from kaem.config.presets import DATASET_DEFAULTS, preset_dataset
from kaem.config.schema import MAX_COUNT, MAX_EVAL_SAMPLES, SCHEMA, ConfigError, basis_names
from kaem.config.values import format_value

__all__ = ["Config", "ConfigError", "DATASET_DEFAULTS", "INERT_KEYS", "MAX_COUNT", "MAX_EVAL_SAMPLES", "SCHEMA",
           "ascii_alias", "basis_names", "config_diff", "config_from_ini", "config_to_ini", "default_config", "format_value",
           "latent_size", "load_config", "preset_dataset"]
