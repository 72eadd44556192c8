"""Who's Harry Potter (Eldan & Russinovich 2023), the toolkit's own method; every rule in docs/whp-method.md.

Stages: corpus -> anchors (:mod:`llm_unlearn.anchors`) and reinforce (:mod:`llm_unlearn.reinforce`: next-token
loss on the target) -> labels (:mod:`llm_unlearn.labels`: generic predictions ``v_b - alpha * ReLU(v_r - v_b)``) ->
finetune (:mod:`llm_unlearn.finetune`: cross-entropy on the generic labels, best checkpoint by validation loss) ->
export -> eval. Its settings are those stage sections (``reinforce``, ``labels``, ``finetune``...); options beyond
the paper are ``finetune.soft_labels`` (soft labels) and ``finetune.retain_weight`` (the retain guard,
:class:`WhpObjective`).
"""

from __future__ import annotations

import torch

from .base import ATTACK_STAGE, Method, Objective, RetainTerm, StageSpec


class WhpObjective(Objective):
    """Cross-entropy on the generic labels (hard, or soft when the batch holds them), plus the optional retain guard:
    ``retain_weight * KL(base || model)`` on generic text, with its own backward after the main one."""

    def __init__(self, guard: RetainTerm | None = None):
        self.guard = guard

    def second_loss(self, model, batch: dict, micro_step: int) -> torch.Tensor | None:
        if self.guard is None or self.guard.weight == 0:
            return None
        return self.guard(model, batch["input_ids"], micro_step)


METHOD = Method(
    "whp", None,
    (
        StageSpec("corpus", ("model", "corpus"), (), "llm_unlearn.pipeline:run_corpus"),
        # the base model proposes substitutes and measures the dictionary (llm_unlearn.anchors)
        StageSpec("anchors", ("model", "corpus", "anchors"), ("corpus",), "llm_unlearn.pipeline:run_anchors"),
        StageSpec("reinforce", ("model", "reinforce"), ("corpus",), "llm_unlearn.reinforce:run_reinforce",
                  distributed=True),
        StageSpec("labels", ("model", "labels"), ("anchors", "reinforce"), "llm_unlearn.labels:run_labels",
                  distributed=True),
        StageSpec("finetune", ("model", "finetune"), ("labels",), "llm_unlearn.finetune:run_finetune",
                  distributed=True),
        StageSpec("export", ("model", "export", "finetune"), ("finetune",), "llm_unlearn.export:run_export"),
        StageSpec("eval", ("eval",), ("export",), "llm_unlearn.pipeline:run_eval"),
        ATTACK_STAGE,
    ),
    "finetune",
    "Who's Harry Potter: fine-tune on generic-prediction labels built from a reinforced model and anchored-term "
    "translations",
    "Eldan & Russinovich 2023, Who's Harry Potter? Approximate Unlearning in LLMs",
)
