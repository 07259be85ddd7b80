"""Run configuration: INI files with the reference's sections and keys, typed and checked.

``load_config(preset, path, overrides)`` builds one in layers: the schema's defaults, the
preset's overrides, an INI file, ``--set SECTION.key=value`` overrides, then cross-checks.
"""
from kaem.config.schema import (DATASET_DEFAULTS, INERT_KEYS, MAX_COUNT, MAX_EVAL_SAMPLES, SCHEMA, Config,
                                ConfigError, ascii_alias, basis_names, config_diff, config_from_ini, config_to_ini, default_config,
                                format_value, latent_size, load_config, preset_dataset)

__all__ = ["Config", "ConfigError", "DATASET_DEFAULTS", "INERT_KEYS", "MAX_COUNT", "MAX_EVAL_SAMPLES", "SCHEMA",
           "ascii_alias", "basis_names", "config_diff", "config_from_ini", "config_to_ini", "default_config", "format_value",
           "latent_size", "load_config", "preset_dataset"]
