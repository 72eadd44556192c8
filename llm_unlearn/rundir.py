"""Where every artifact of a run lives. Stages read and write only these paths."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunPaths:
    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    manifest = property(lambda s: s.root / "manifest.json")
    recipe = property(lambda s: s.root / "recipe.yaml")
    inputs = property(lambda s: s.root / "inputs")  # corpora / anchors given in memory through the API
    corpus_dir = property(lambda s: s.root / "corpus")
    blocks = property(lambda s: s.root / "corpus" / "blocks.jsonl")
    split = property(lambda s: s.root / "corpus" / "split.json")
    anchors_dir = property(lambda s: s.root / "anchors")
    anchors = property(lambda s: s.root / "anchors" / "anchors.yaml")
    reinforce_dir = property(lambda s: s.root / "reinforce")
    reinforce_weights = property(lambda s: s.root / "reinforce" / "adapter")
    labels_dir = property(lambda s: s.root / "labels")
    labels_dataset = property(lambda s: s.root / "labels" / "dataset")
    labels_stats = property(lambda s: s.root / "labels" / "stats.json")
    finetune_dir = property(lambda s: s.root / "finetune")
    finetune_weights = property(lambda s: s.root / "finetune" / "adapter")
    unlearn_dir = property(lambda s: s.root / "unlearn")  # the baselines' training stage (methods other than whp)
    unlearn_weights = property(lambda s: s.root / "unlearn" / "adapter")
    export_dir = property(lambda s: s.root / "export")
    export_model = property(lambda s: s.root / "export" / "model")
    export_adapter = property(lambda s: s.root / "export" / "adapter")
    eval_dir = property(lambda s: s.root / "eval")

    def stage_dir(self, stage: str) -> Path:
        return self.root / stage
