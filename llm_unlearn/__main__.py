"""`python -m llm_unlearn ...` (and `accelerate launch -m llm_unlearn ...`)."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
