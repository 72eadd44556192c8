"""Who's Harry Potter (Eldan & Russinovich 2023), the toolkit's own method, whole in :mod:`llm_unlearn.whp`; every
rule in docs/whp-method.md. This entry names its stages:

corpus -> anchors (:mod:`llm_unlearn.whp.anchors`) and reinforce (:mod:`llm_unlearn.whp.reinforce`: next-token loss on
the target) -> labels (:mod:`llm_unlearn.whp.labels`: generic predictions ``v_b - alpha * ReLU(v_r - v_b)``) ->
finetune (:mod:`llm_unlearn.whp.finetune`: cross-entropy on the generic labels, best checkpoint by validation loss,
optional retain guard) -> export -> eval (with the generic floor, :mod:`llm_unlearn.whp.floor`). Its settings are
those stage sections (``anchors``, ``reinforce``, ``labels``, ``finetune``).
"""

from __future__ import annotations

from .base import ATTACK_STAGE, Method, StageSpec

METHOD = Method(
    "whp", None,
    (
        StageSpec("corpus", ("model", "corpus"), (), "llm_unlearn.corpus:run_corpus"),
        # the base model proposes substitutes and measures the dictionary
        StageSpec("anchors", ("model", "corpus", "anchors"), ("corpus",), "llm_unlearn.whp.anchors.stage:run_anchors"),
        StageSpec("reinforce", ("model", "reinforce"), ("corpus",), "llm_unlearn.whp.reinforce:run_reinforce",
                  distributed=True),
        StageSpec("labels", ("model", "labels"), ("anchors", "reinforce"), "llm_unlearn.whp.labels.stage:run_labels",
                  distributed=True),
        StageSpec("finetune", ("model", "finetune"), ("labels",), "llm_unlearn.whp.finetune:run_finetune",
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
