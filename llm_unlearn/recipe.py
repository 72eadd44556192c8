"""``Recipe`` moved to :mod:`llm_unlearn.config`; this name stays importable for code written against it."""

from .config import Recipe  # noqa: F401

__all__ = ["Recipe"]
