"""The attacks by name. Each module has ``NAME`` and ``run(ctx) -> list[Row]``; the optional
``missing_input(ctx)`` says why an attack cannot run on these inputs (then it is skipped when not asked for by
name, and an error when it is)."""

from __future__ import annotations

import importlib

from ..errors import EvalError

ATTACKS = {
    "in_context": "in_context",
    "jailbreak": "jailbreak",
    "languages": "languages",
    "chat": "chat",
    "quantization": "quantization",
    "relearn": "relearn",
}


def attack_module(name: str):
    if name not in ATTACKS:
        raise EvalError(f"unknown attack {name!r}; attacks: {', '.join(ATTACKS)}")
    return importlib.import_module(f"{__package__}.{ATTACKS[name]}")


def parse_attacks(value) -> list[str]:
    """A comma list (or list) of attack names, checked; empty or 'all' = every attack."""
    if value is None:
        return []
    names = [n.strip() for n in (value.split(",") if isinstance(value, str) else value) if str(n).strip()]
    if names == ["all"]:
        return []
    unknown = [n for n in names if n not in ATTACKS]
    if unknown:
        raise EvalError(f"unknown attack(s) {', '.join(map(repr, unknown))}; attacks: {', '.join(ATTACKS)}")
    return list(dict.fromkeys(names))
