"""CLI subcommands: one module each, with ``register(subparsers)`` adding its parser.

Each parser sets ``func`` to a callable taking the parsed args and returning an exit code."""

COMMAND_MODULES = [
    "info",
    "anchors",
    "stages",
    "evaluate",
    "compare",
    "attack",
    "benchmark",
]
