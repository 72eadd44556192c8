"""Value checks every recipe section shares; every message names its key as ``section.key``.

The config layer imports nothing of the package but its errors (:mod:`llm_unlearn.errors`).
"""

from __future__ import annotations

import difflib
import math
import re
from typing import Any, ClassVar

from ..errors import RecipeError

# the largest count or seed a recipe may hold: what torch / numpy take as an int32 (a bigger number is a typo that
# would overflow or run for ever)
MAX_INT = 2**31 - 1
_DEVICE = re.compile(r"^(cpu|cuda|mps|xpu)(:\d+)?$")
_CHAT_SPEC = re.compile(r"^(hf:.+|openai(:.+)?)$")  # a judge / substitute writer (endpoint rules: openai_chat T1a)


class SectionChecks:
    """Value checks for one recipe section; every message names its key as ``section.key``.

    The checks test types too, so a section built in code (or mutated after loading) is held to the same rules
    as one read from YAML."""

    section: ClassVar[str] = ""

    def __post_init__(self):
        self.validate()  # a section built in code is checked at once; Recipe.validate checks again (after --set)

    def validate(self) -> None:  # overridden per section, next to its fields
        pass

    def _fail(self, name: str, need: str) -> None:
        key = f"{self.section}.{name}" if self.section else name
        raise RecipeError(f"{key} must be {need} (got {getattr(self, name)!r})")

    def _bool(self, *names: str) -> None:
        for name in names:
            if not isinstance(getattr(self, name), bool):
                self._fail(name, "true or false")

    def _int(self, name: str, minimum: int, optional: bool = False) -> None:
        value = getattr(self, name)
        if value is None and optional:
            return
        if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= MAX_INT:
            self._fail(name, f"an integer in [{minimum}, {MAX_INT}]" + (" or null" if optional else ""))

    def _float(self, name: str, low: float | None = None, high: float | None = None, low_open: bool = False,
               high_open: bool = False, optional: bool = False) -> None:
        value = getattr(self, name)
        if value is None and optional:
            return
        need = _range_text(low, high, low_open, high_open) + (" or null" if optional else "")
        if not _number_in(value, low, high, low_open, high_open):
            self._fail(name, need)

    def _choice(self, name: str, choices, optional: bool = False) -> None:
        value = getattr(self, name)
        if value is None and optional:
            return
        if not isinstance(value, str) or value not in choices:
            quoted = [f"'{c}'" for c in choices]
            need = " or ".join(quoted) if len(quoted) == 2 else "one of " + ", ".join(quoted)
            self._fail(name, need + (" or null" if optional else ""))

    def _text(self, name: str, optional: bool = False) -> None:
        """A non-empty string (an empty path would silently mean the current directory)."""
        value = getattr(self, name)
        if value is None and optional:
            return
        if not isinstance(value, str) or not value.strip():
            self._fail(name, "a non-empty string" + (" or null" if optional else ""))

    def _texts(self, name: str, non_empty: bool = False) -> None:
        value = getattr(self, name)
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value) or (
                non_empty and not value):
            self._fail(name, ("a non-empty " if non_empty else "a ") + "list of non-empty strings")

    def _device(self, name: str) -> None:
        value = getattr(self, name)
        if value is not None and (not isinstance(value, str) or not _DEVICE.match(value)):
            self._fail(name, "cpu, cuda, cuda:N, mps, xpu or null (automatic)")


def _number_in(value: Any, low, high, low_open: bool, high_open: bool) -> bool:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return False
    if low is not None and (value <= low if low_open else value < low):
        return False
    return not (high is not None and (value >= high if high_open else value > high))


def _range_text(low, high, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f"a finite number in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if low is not None:
        return f"a finite number {'>' if low_open else '>='} {low}"
    if high is not None:
        return f"a finite number {'<' if high_open else '<='} {high}"
    return "a finite number"


def did_you_mean(key: str, known, prefix: str = "", listed: str = "known") -> str:
    """`` (did you mean 'PREFIX.close'?)`` for the closest known name, else `` (LISTED: every known name)``."""
    close = difflib.get_close_matches(key, sorted(known), n=1)
    return f" (did you mean '{prefix}{close[0]}'?)" if close else f" ({listed}: {', '.join(sorted(known))})"


def need_number(section: str, name: str, value, low: float | None = None, low_open: bool = False,
                optional: bool = False) -> None:
    """A finite number (not a bool) >= low (> low with ``low_open``); the error names ``section.name``."""
    if value is None and optional:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if not ok:
        bound = "" if low is None else f" {'>' if low_open else '>='} {low}"
        raise RecipeError(f"{section}.{name} must be a finite number{bound}{' or null' if optional else ''} "
                          f"(got {value!r})")


def need_int(section: str, name: str, value, minimum: int, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise RecipeError(f"{section}.{name} must be an integer >= {minimum}{' or null' if optional else ''} "
                          f"(got {value!r})")
