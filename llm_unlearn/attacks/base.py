"""What every attack gets (:class:`AttackContext`) and returns (:class:`Row`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import AttackConfig
from ..errors import EvalError
from ..evaluation.suites import Suite
from .scoring import Scorer

SAME_ITEMS = "same_items"  # the attacked model answers the plain suite's items (recovery ATK-R1/R2)
PROBE = "probe"  # other items (another language, chat questions, two-choice): recovery ATK-R3


@dataclass
class Row:
    """One model scored under one attack variant on one suite."""

    attack: str
    variant: str
    suite: str  # the plain suite this row is compared with
    model: str  # "unlearned" (under attack) or "base" (the control under the same attack)
    measure: dict
    kind: str = SAME_ITEMS
    floor: float = 0.0  # chance level of the measure (ATK-R3)
    probe: str | None = None  # name of the probe set (e.g. "sherlock_holmes.fr", "chat")
    info: dict = field(default_factory=dict)


@dataclass
class AttackContext:
    base: tuple  # (model, tokenizer)
    unlearned: tuple
    suites: list[Suite]
    scorer: Scorer
    config: AttackConfig
    heldout_texts: list[str] = field(default_factory=list)  # target text no stage trained on
    relearn_texts: dict[str, list[str]] = field(default_factory=dict)  # other text the user names
    relearn_lr: float = 3e-4
    plain: dict = field(default_factory=dict)  # suite name -> {"base": measure, "unlearned": measure}
    work_dir: str | None = None
    base_spec: str | None = None  # where the base came from (its GGUF file gives the base's own format, ATK-Q5)

    def models(self, control: bool = True):
        """(label, model, tokenizer) of the unlearned model and, when ``control``, the base model."""
        out = [("unlearned", *self.unlearned)]
        if control:
            out.append(("base", *self.base))
        return out


class MissingInput(EvalError):
    """An attack cannot run: its input (held-out text, chat questions, ...) is missing."""
