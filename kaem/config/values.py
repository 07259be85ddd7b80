"""One value of a config key: its INI text parsed and checked against its :class:`Field`, and
formatted back to canonical text (``parse_value`` / ``format_value`` round-trip exactly).
"""
from __future__ import annotations

import math
from typing import Any

from kaem.config.schema import Field


def _bounds_text(field: Field) -> str:
    """Human description of numeric bounds, e.g. ' >= 0 and <= 1'."""
    def num(x: float) -> str:  # integers in full: "<= 1000000", not "<= 1e+06"
        return str(x) if isinstance(x, int) else f"{x:g}"

    parts = []
    if field.gt is not None:
        parts.append(f"> {num(field.gt)}")
    if field.ge is not None:
        parts.append(f">= {num(field.ge)}")
    if field.le is not None:
        parts.append(f"<= {num(field.le)}")
    return (" " + " and ".join(parts)) if parts else ""


def _in_bounds(x: float, field: Field) -> bool:
    if field.gt is not None and not x > field.gt:
        return False
    if field.ge is not None and not x >= field.ge:
        return False
    if field.le is not None and not x <= field.le:
        return False
    return True


def expected_text(field: Field) -> str:
    """What a valid value of ``field`` looks like, for error messages."""
    bounds = _bounds_text(field)
    if field.kind == "int":
        return f"an integer{bounds}"
    if field.kind == "float":
        return f"a finite float{bounds}"
    if field.kind == "bool":
        return "a bool (true/false/1/0/yes/no)"
    if field.kind == "choice":
        return f"one of: {', '.join(choices_of(field))}"
    if field.kind == "int_list":
        size = f"at least {field.min_len} integer(s)" if field.min_len else "integers (or nothing)"
        return f"a comma-separated list of {size}" + (f", each{bounds}" if bounds else "")
    if field.kind == "float_list":
        return (f"{field.length} comma-separated finite floats"
                + (f", each{bounds}" if bounds else ""))
    if field.kind == "float_pair":
        return ("two comma-separated floats 'lo, hi' with lo < hi"
                + (f", each{bounds}" if bounds else ""))
    raise AssertionError(f"unknown field kind {field.kind!r}")


def choices_of(field: Field) -> list:
    """The valid names of a choice field (calling the lookup function if it is one)."""
    source = field.choices
    return list(source() if callable(source) else source)


def _parse_int(raw: str) -> int:
    return int(raw.strip())  # ValueError on anything but an integer literal


def _parse_float(raw: str) -> float:
    value = float(raw.strip())
    if not math.isfinite(value):
        raise ValueError("not finite")
    return value


def parse_bool(raw: str) -> bool:
    """true/1/yes -> True, false/0/no -> False (any case); ValueError otherwise."""
    text = raw.strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise ValueError("not a bool")


def _split_items(raw: str) -> list:
    items = [item.strip() for item in raw.split(",")]
    if any(item == "" for item in items):
        raise ValueError("empty item")
    return items


def parse_value(field: Field, raw: str) -> Any:
    """Parse and check one raw string; raises ValueError with no message on failure."""
    if field.kind == "int":
        value = _parse_int(raw)
        numbers = [value]
    elif field.kind == "float":
        value = _parse_float(raw)
        numbers = [value]
    elif field.kind == "bool":
        return parse_bool(raw)
    elif field.kind == "choice":
        return _parse_choice(field, raw)
    elif field.kind == "int_list":
        value = tuple(_parse_int(item) for item in _split_items(raw)) if raw.strip() or field.min_len else ()
        if len(value) < field.min_len:
            raise ValueError("too short")
        numbers = list(value)
    elif field.kind == "float_list":
        value = tuple(_parse_float(item) for item in _split_items(raw))
        if len(value) != field.length:
            raise ValueError("wrong length")
        numbers = list(value)
    elif field.kind == "float_pair":
        value = tuple(_parse_float(item) for item in _split_items(raw))
        if len(value) != 2 or not value[0] < value[1]:
            raise ValueError("not an ordered pair")
        numbers = list(value)
    else:
        raise AssertionError(f"unknown field kind {field.kind!r}")
    if not all(_in_bounds(x, field) for x in numbers):
        raise ValueError("out of range")
    return value


def _parse_choice(field: Field, raw: str) -> str:
    """Exact match, else a unique case-insensitive match (returned in canonical case)."""
    text = raw.strip()
    valid = choices_of(field)
    if text in valid:
        return text
    folded = [v for v in valid if v.lower() == text.lower()]
    if len(folded) == 1:
        return folded[0]
    raise ValueError("not a choice")


def format_value(value: Any) -> str:
    """Canonical INI text of a typed value (floats use repr, so they round-trip exactly)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, tuple):
        return ", ".join(format_value(item) for item in value)
    return str(value)
