"""llm-unlearn: make a causal LM forget a target concept with the "Who's Harry Potter" method.

Public API (imported lazily so that `llm-unlearn --help` stays fast)::

    from llm_unlearn import Recipe, unlearn, load_model, attack
"""

__version__ = "0.1.0"

_LAZY = {
    "Recipe": ("llm_unlearn.config", "Recipe"),
    "load_model": ("llm_unlearn.models", "load_model"),
    "load_tokenizer": ("llm_unlearn.models", "load_tokenizer"),
    "unlearn": ("llm_unlearn.api", "unlearn"),
    "Unlearner": ("llm_unlearn.api", "Unlearner"),
    "RunResult": ("llm_unlearn.api", "RunResult"),
    "UnlearnError": ("llm_unlearn.errors", "UnlearnError"),
    "attack": ("llm_unlearn.attacks", "attack"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'llm_unlearn' has no attribute {name!r}")
