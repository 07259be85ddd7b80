"""Argument parsing helpers for ``cli.py``: bounded integers, case-insensitive names, a
parser whose errors are one line, and parsed options turned back into words.

``OneLineParser`` reports a bad argument as ``error: <what is wrong> (see 'python cli.py
COMMAND --help')`` and exit status 2, without the usage block argparse prints by default;
``RaisingParser`` raises :class:`~kaem.run.failures.CommandError` instead (a job file's line
that cannot parse is recorded as failed, and the other lines go on).
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Callable, NoReturn, Sequence

from kaem.run.failures import CommandError


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one ``error:`` line with a pointer to ``--help``."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {message} (see 'python {self.prog} --help')", file=sys.stderr)
        sys.exit(2)


class RaisingParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors raise CommandError (for the lines of a job file)."""

    def error(self, message: str) -> NoReturn:
        raise CommandError(f"{self.prog}: {message}")


def lower(text: str) -> str:
    """Dataset and preset names are case-insensitive (DATASET=FMNIST, as in the reference)."""
    return text.lower()


def int_in(lo: int, hi: int) -> Callable[[str], int]:
    """An argparse type: an integer in lo..hi (plausible bounds, like the config's)."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            v = None
        if v is None or not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"expected an integer from {lo} to {hi}, got {text!r}")
        return v
    return parse


def positive_int(text: str) -> int:
    """An argparse type: an integer from 1 to the config's largest count."""
    from kaem.config import MAX_COUNT

    return int_in(1, MAX_COUNT)(text)


def subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    """The sub-parser of ``command`` in ``parser``."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[command]


def option_words(parser: argparse.ArgumentParser, args: argparse.Namespace, skip: Sequence[str]) -> list[str]:
    """The options of ``args`` parsed by ``parser`` (a command's sub-parser), except those
    whose destination is in ``skip``, back as command-line words: only those that differ
    from their defaults, in the parser's order (a generated line reads like a typed one)."""
    words: list[str] = []
    for action in parser._actions:
        value: Any = getattr(args, action.dest, None)
        if action.dest in skip or not action.option_strings or value == action.default:
            continue
        flag = action.option_strings[-1]
        if isinstance(action, argparse._StoreTrueAction):
            words.append(flag)
        elif isinstance(action, argparse._AppendAction):
            words += [w for v in value for w in (flag, str(v))]
        else:
            words += [flag, str(value)]
    return words
