"""Typed errors. Every error a user can cause derives from :class:`UnlearnError`;
the CLI turns these into a one-line message and exit code 2."""


class UnlearnError(Exception):
    """Base class for errors caused by bad input or environment (not by bugs)."""


class ModelLoadError(UnlearnError):
    """A model spec could not be resolved or loaded."""


class CorpusError(UnlearnError):
    """A target corpus is missing, empty, binary or not UTF-8."""


class RecipeError(UnlearnError):
    """A recipe file or override is invalid (unknown key, wrong type, bad value)."""


class AnchorError(UnlearnError):
    """An anchor dictionary is invalid, or anchor extraction could not run."""


class RunDirError(UnlearnError):
    """A run directory is missing a stage output, or would be overwritten."""


class EvalError(UnlearnError):
    """Evaluation data (suite, benchmark file) is missing or malformed."""


class HubError(UnlearnError):
    """Pushing to / pulling from the Hugging Face Hub failed (offline, no token)."""
