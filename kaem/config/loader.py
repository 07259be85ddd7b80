"""The Config object, and building one: defaults, presets, INI files, overrides; INI text out.

``load_config`` builds a configuration in layers, then cross-checks it (``kaem.config``).
``config_to_ini`` writes the canonical text stored in checkpoints and ``config_from_ini``
reads it back exactly.
"""
from __future__ import annotations

import configparser
from typing import Any, Iterator, Optional, Sequence

from kaem.config.checks import check_config
from kaem.config.compat import LATER_KEYS, RETIRED_KEYS, check_inert, inert_entry, resolve_key, resolve_section
from kaem.config.presets import DATASET_DEFAULTS
from kaem.config.schema import SCHEMA, ConfigError
from kaem.config.values import expected_text, format_value, parse_value

OVERRIDE_FORM = "SECTION.key=value (e.g. EbmModel.grid_size=30)"


class Config:
    """Typed configuration values, nested by section: ``cfg["EbmModel"]["grid_size"]``."""

    def __init__(self, sections: dict) -> None:
        self.sections: dict = sections

    def __getitem__(self, section: str) -> dict:
        return self.sections[resolve_section(section)]

    def __iter__(self) -> Iterator[str]:
        """The section names, so that ``for s in cfg: cfg[s]`` works (without it Python would
        iterate by calling ``cfg[0]``, ``cfg[1]``, ...)."""
        return iter(self.sections)

    def get(self, section: str, key: str) -> Any:
        """One value; ``key`` may be an ASCII alias."""
        return self.sections[resolve_section(section)][resolve_key(section, key)]

    def set(self, section: str, key: str, raw: str) -> None:
        """Parse and check one raw string value and store it (cross-checks not run). An
        inert reference key (INERT_KEYS) is checked and not stored."""
        inert = inert_entry(section, key)
        if inert is not None:
            check_inert(section, *inert, raw)
            return
        section = resolve_section(section)
        key = resolve_key(section, key)
        field = SCHEMA[section][key]
        try:
            value = parse_value(field, raw)
        except ValueError:
            raise ConfigError(f"bad value {raw.strip()!r} for {section}.{key}: "
                              f"expected {expected_text(field)}") from None
        self.sections[section][key] = value

    def copy(self) -> "Config":
        """An independent copy (values themselves are immutable)."""
        return Config({name: dict(values) for name, values in self.sections.items()})

    def validate(self) -> "Config":
        """Run the cross-checks between keys; returns self."""
        check_config(self)
        return self

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Config) and self.sections == other.sections

    def __repr__(self) -> str:
        return f"Config({self.sections!r})"


def _schema_defaults() -> Config:
    return Config({section: {key: field.default for key, field in fields.items()}
                   for section, fields in SCHEMA.items()})


def _apply_entries(cfg: Config, entries: dict, where: str) -> None:
    """Set {section: {key: raw}} on cfg; errors are prefixed with ``where``."""
    seen: dict = {}
    for section, values in entries.items():
        for key, raw in values.items():
            try:
                inert = inert_entry(section, key)
                canonical = inert[0] if inert else resolve_key(section, key)
                if (section, canonical) in seen:
                    raise ConfigError(f"{section}.{canonical} is given twice (as "
                                      f"{seen[section, canonical]!r} and {key!r})")
                seen[section, canonical] = key
                cfg.set(section, canonical, raw)
            except ConfigError as err:
                raise ConfigError(f"{where}: {err}") from None


def default_config(dataset: str) -> Config:
    """Schema defaults with the overrides of ``dataset`` (a key of DATASET_DEFAULTS)."""
    if dataset not in DATASET_DEFAULTS:
        raise ConfigError(f"unknown dataset {dataset!r}; valid datasets: "
                          f"{', '.join(DATASET_DEFAULTS)}")
    cfg = _schema_defaults()
    _apply_entries(cfg, DATASET_DEFAULTS[dataset], f"defaults of dataset {dataset!r}")
    return cfg


def _new_parser() -> configparser.ConfigParser:
    # No DEFAULT section (a [DEFAULT] in a file is then just an unknown section) and no
    # '%' interpolation; keys keep case and unicode.
    parser = configparser.ConfigParser(interpolation=None, default_section="\x00",
                                       inline_comment_prefixes=("#", ";"))
    parser.optionxform = str  # type: ignore[assignment]
    return parser


def _read_ini(text: str, where: str) -> dict:
    """INI text -> {section: {key: raw}}; syntax errors name ``where``."""
    parser = _new_parser()
    try:
        parser.read_string(text, source=where)
    except configparser.Error as err:
        raise ConfigError(f"{where}: cannot parse INI: {err}") from None
    return {section: dict(parser[section]) for section in parser.sections()}


def parse_override(text: str) -> tuple:
    """'SECTION.key=value' -> (section, key, value)."""
    target, eq, value = text.partition("=")
    section, dot, key = target.strip().partition(".")
    if not eq or not dot or not section or not key.strip():
        raise ConfigError(f"malformed override {text!r}: expected the form {OVERRIDE_FORM}")
    return section.strip(), key.strip(), value


def load_config(dataset: str, path: Optional[str] = None,
                overrides: Sequence[str] = ()) -> Config:
    """Defaults for ``dataset``, then the INI file at ``path`` (only keys present
    override), then each override ``SECTION.key=value``; then the cross-checks."""
    cfg = default_config(dataset)
    if path is not None:
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
        except (OSError, UnicodeDecodeError) as err:
            reason = err.strerror if isinstance(err, OSError) else str(err)
            raise ConfigError(f"cannot read config file {path!r}: {reason}") from None
        _apply_entries(cfg, _read_ini(text, path), f"config file {path!r}")
    for text in overrides:
        section, key, value = parse_override(text)
        try:
            cfg.set(section, key, value)
        except ConfigError as err:
            raise ConfigError(f"override {text!r}: {err}") from None
    return cfg.validate()


def config_to_ini(cfg: Config) -> str:
    """Canonical INI text: every section and key in schema order, one ``key = value``."""
    blocks = []
    for section, fields in SCHEMA.items():
        lines = [f"[{section}]"]
        lines += [f"{key} = {format_value(cfg[section][key])}" for key in fields]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"




def config_from_ini(text: str) -> Config:
    """Read ``config_to_ini`` text back. Every key must be present (no defaults are
    filled in, so a stored config means exactly what it says), except the LATER_KEYS;
    RETIRED_KEYS are dropped."""
    entries = _read_ini(text, "stored config")
    for (section, key), value in RETIRED_KEYS.items():
        if entries.get(section, {}).get(key, "").strip() == value:
            del entries[section][key]
    for (section, key), value in LATER_KEYS.items():
        if value is not None and key not in {resolve_key(section, k) for k in entries.get(section, {})}:
            entries.setdefault(section, {})[key] = value
    cfg = _schema_defaults()
    _apply_entries(cfg, entries, "stored config")
    missing = [f"{section}.{key}" for section, fields in SCHEMA.items() for key in fields
               if key not in {resolve_key(section, k) for k in entries.get(section, {})}
               and (section, key) not in LATER_KEYS]
    if missing:
        raise ConfigError(f"stored config is missing keys: {', '.join(missing)}")
    return cfg.validate()


def config_diff(stored: Config, asked: Config) -> list:
    """'SECTION.key: A stored, B asked' for every key whose value differs."""
    return [f"{section}.{key}: {format_value(stored[section][key])} stored, {format_value(asked[section][key])} asked"
            for section, fields in SCHEMA.items() for key in fields
            if stored[section][key] != asked[section][key]]
