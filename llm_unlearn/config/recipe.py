"""Recipes: the typed configuration of a run, loaded from YAML.

A recipe has one section per pipeline stage, plus one per method with settings of its own. Unknown keys and wrong
types are errors that name the key and the file; ``--set section.key=value`` overrides any field from the command
line (the value is parsed as YAML, so ``--set labels.alphas=[2,5]`` works). Each section checks its own fields
(``validate``, run at construction); :meth:`Recipe.validate` runs them all and then the rules across sections, before
any stage (``--dry-run`` included).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import yaml

from ..errors import RecipeError
from .checks import did_you_mean
from .loading import (
    build,
    drop_file_trust,
    removed_option,
    resolve_data_refs,
    resolve_override_path,
    resolve_relative_paths,
)
from .methods import (
    DEFAULT_METHOD,
    METHOD_CONFIGS,
    GradAscentConfig,
    GradDiffConfig,
    NPOConfig,
    RMUConfig,
    SimNPOConfig,
    check_method,
)
from .sections import AttackConfig, CorpusConfig, EvalConfig, ExportConfig, ModelConfig
from .training import FinetuneConfig, ReinforceConfig
from .whp import AnchorsConfig, LabelsConfig
from .yamlio import load_yaml, read_yaml_file


@dataclass
class Recipe:
    name: str = "unlearn"
    target: str = ""  # human-readable name of the concept to forget ("Sherlock Holmes")
    method: str = DEFAULT_METHOD  # the unlearning method (llm_unlearn.methods): whp, grad_ascent, grad_diff, ...
    model: ModelConfig = field(default_factory=ModelConfig)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    anchors: AnchorsConfig = field(default_factory=AnchorsConfig)
    reinforce: ReinforceConfig = field(default_factory=ReinforceConfig)
    labels: LabelsConfig = field(default_factory=LabelsConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    # one section per method with settings of its own (the method's config dataclass, llm_unlearn.methods)
    grad_ascent: GradAscentConfig = field(default_factory=GradAscentConfig)
    grad_diff: GradDiffConfig = field(default_factory=GradDiffConfig)
    npo: NPOConfig = field(default_factory=NPOConfig)
    simnpo: SimNPOConfig = field(default_factory=SimNPOConfig)
    rmu: RMUConfig = field(default_factory=RMUConfig)

    # ---- loading -------------------------------------------------------------------------------------
    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | None = None) -> Recipe:
        path = Path(path)
        try:
            is_dir, is_file = path.is_dir(), path.is_file()
        except OSError as exc:  # a name the OS cannot look up (too long, ...)
            raise RecipeError(f"recipe {str(path)[:120]!r}: {exc.strerror or exc}") from exc
        if is_dir:
            raise RecipeError(f"{path} is a folder, not a recipe file: pass a recipe YAML (a run directory's is "
                              f"{path / 'recipe.yaml'})")
        if not is_file:
            raise RecipeError(f"recipe file not found: {path}")
        data = read_yaml_file(path, RecipeError, "recipe") or {}  # rules Y1-Y3: no aliases, no duplicate keys
        if not isinstance(data, dict):
            raise RecipeError(f"{path}: a recipe must be a mapping of sections, got {type(data).__name__}")
        drop_file_trust(data, path)
        data = resolve_relative_paths(data, path.parent)
        recipe = cls.from_dict(data, source=str(path))
        return recipe.with_overrides(list(overrides or []))

    @classmethod
    def from_dict(cls, data: dict, source: str = "<dict>") -> Recipe:
        if isinstance(data, dict):
            data = resolve_data_refs(data)
        return build(cls, data, source, prefix="")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def with_override(self, item: str) -> Recipe:
        """Apply one ``section.key=value`` override (value parsed as YAML)."""
        return self.with_overrides([item])

    def with_overrides(self, items: list[str]) -> Recipe:
        """Apply ``section.key=value`` overrides (values parsed as YAML) in order, later ones winning, and check the
        recipe once they are all in: settings that must change together (e.g. ``finetune.full_finetune=false`` with
        ``finetune.quantization_aware=null``) can be given in any order."""
        data = self.to_dict()
        applied = [item for item in items if _apply_override(data, item)]
        if not applied:
            return self
        return Recipe.from_dict(data, source=" ".join(f"--set {item}" for item in applied))

    def section_hash(self, *sections: str) -> str:
        """Stable hash of some sections, used by the run manifest to decide what must be redone."""
        payload = {s: self.to_dict()[s] for s in sections}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def label_alphas(self) -> list[float]:
        a = self.labels.alpha
        return [float(x) for x in (self.labels.alphas or [a / 2, a, 2 * a])]

    SECTIONS: ClassVar[tuple[str, ...]] = ("model", "corpus", "anchors", "reinforce", "labels", "finetune", "eval",
                                           "export", "attack")
    METHOD_SECTIONS: ClassVar[tuple[str, ...]] = tuple(METHOD_CONFIGS)

    def validate(self) -> None:
        """Every field of every section (types, ranges, finiteness, enums), then the rules across sections.

        Runs before any stage (``Pipeline`` calls it, ``--dry-run`` included); each error names its key."""
        for name in ("name", "target"):
            if not isinstance(getattr(self, name), str):
                raise RecipeError(f"{name} must be a string (got {getattr(self, name)!r})")
        if not isinstance(self.method, str):
            raise RecipeError(f"method must be a string (got {self.method!r})")
        check_method(self.method)  # an unknown method names the valid ones
        for name in self.METHOD_SECTIONS:  # their checks live in __post_init__: rerun them (code may have mutated)
            section = getattr(self, name)
            if not isinstance(section, typing.get_type_hints(Recipe)[name]):
                raise RecipeError(f"'{name}' must be a mapping of {name} settings (got {section!r})")
            dataclasses.replace(section)
        for name in self.SECTIONS:
            section = getattr(self, name)
            expected = typing.get_type_hints(Recipe)[name]
            if not isinstance(section, expected):
                raise RecipeError(f"'{name}' must be a mapping of {name} settings (got {section!r})")
            section.validate()
        if self.finetune.label_alpha is not None and float(self.finetune.label_alpha) not in self.label_alphas():
            raise RecipeError(
                f"finetune.label_alpha={self.finetune.label_alpha} is not among labels.alphas {self.label_alphas()}"
            )
        if self.finetune.soft_labels and self.labels.soft_top_k < 1:
            raise RecipeError("finetune.soft_labels needs the top-k generic logits: set labels.soft_top_k "
                              "(e.g. --set labels.soft_top_k=32)")
        if self.finetune.disruption_mask:  # rule DM4 (llm_unlearn.robust): the mask agrees with a retain gradient
            section = self.finetune if self.method == "whp" else getattr(self, self.method, None)
            key = "finetune.retain_weight" if self.method == "whp" else f"{self.method}.retain_weight"
            if not hasattr(section, "retain_weight"):
                raise RecipeError(f"finetune.disruption_mask needs a retain term to agree with, and method "
                                  f"{self.method} has none: use a method with one (e.g. grad_diff), or turn the mask off")
            if not section.retain_weight:
                raise RecipeError(f"finetune.disruption_mask needs a retain term to agree with: set {key} > 0, or "
                                  "turn the mask off")


def _apply_override(data: dict, item: str) -> bool:
    """Write one ``section.key=value`` override into the recipe dict ``data``; False where it names a removed option
    at its "off" value (nothing changes)."""
    if "=" not in item:
        raise RecipeError(f"override '{item}' must look like section.key=value")
    dotted, raw = item.split("=", 1)
    try:
        value = load_yaml(raw)
    except yaml.YAMLError as exc:
        raise RecipeError(f"override '{item}': value is not valid YAML: {exc}") from exc
    value = resolve_override_path(tuple(dotted.strip().split(".")), value)
    node = data
    parts = dotted.strip().split(".")
    for depth, part in enumerate(parts[:-1]):
        if part in node and not isinstance(node[part], dict):
            key = ".".join(parts[:depth + 1])
            raise RecipeError(f"override '{item}': '{key}' is a value, not a section; use --set {key}=VALUE")
        if not isinstance(node.get(part), dict):
            raise RecipeError(f"override '{item}': unknown section '{part}'{did_you_mean(part, node)}")
        node = node[part]
    if parts[-1] not in node:
        if len(parts) == 2 and removed_option(parts[0], parts[1], value, f"--set {item}"):
            return False  # a removed option at its "off" value changes nothing
        raise RecipeError(f"override '{item}': unknown key '{dotted.strip()}'"
                           f"{did_you_mean(parts[-1], node, '.'.join(parts[:-1]) + '.')}")
    if isinstance(node[parts[-1]], dict) and len(parts) == 1 and parts[0] in Recipe.SECTIONS + Recipe.METHOD_SECTIONS:
        # `--set model=null` must not silently reset a whole section to its defaults
        if not isinstance(value, dict):
            raise RecipeError(f"override '{item}': '{parts[0]}' is a section, not a value; set one of its keys, "
                              f"e.g. --set {parts[0]}.{next(iter(node[parts[-1]]))}=...")
        value = {**node[parts[-1]], **value}  # a mapping updates the keys it names and keeps the others
    node[parts[-1]] = value
    return True
