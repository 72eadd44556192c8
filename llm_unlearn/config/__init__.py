"""The config layer: every recipe section, the methods' sections, YAML loading and path resolution.

It sits at the foot of the package and imports nothing of ours but :mod:`llm_unlearn.errors`, so any module may
import it. ``Recipe.validate`` (run before any stage and by ``--dry-run``) checks every section, then the rules across
sections."""

from .checks import MAX_INT, SectionChecks, did_you_mean, need_int, need_number
from .datadir import data_dir, data_file, is_data_ref, is_hf_ref, resolve_data_ref
from .loading import REMOVED_OPTIONS, resolve_override_path
from .methods import (
                      DEFAULT_METHOD,
                      METHOD_CONFIGS,
                      METHOD_NAMES,
                      GradAscentConfig,
                      GradDiffConfig,
                      NPOConfig,
                      RMUConfig,
                      SimNPOConfig,
                      check_retain,
)
from .recipe import Recipe
from .sections import (
                      BENCHMARKS,
                      GGUF_FORMATS,
                      MODEL_DTYPES,
                      AttackConfig,
                      CorpusConfig,
                      EvalConfig,
                      ExportConfig,
                      ModelConfig,
)
from .training import DEFAULT_LORA_TARGETS, FinetuneConfig, ReinforceConfig, TrainConfig
from .whp import DEFAULT_TYPE_QUOTAS, TARGET_RISE_SETTINGS, AnchorsConfig, LabelsConfig
from .yamlio import load_yaml, read_yaml_file

__all__ = [
    "MAX_INT", "SectionChecks", "did_you_mean", "need_int", "need_number", "data_dir", "data_file", "is_data_ref",
    "is_hf_ref", "resolve_data_ref", "REMOVED_OPTIONS", "resolve_override_path", "DEFAULT_METHOD", "METHOD_CONFIGS",
    "METHOD_NAMES", "GradAscentConfig", "GradDiffConfig", "NPOConfig", "RMUConfig", "SimNPOConfig", "check_retain",
    "Recipe", "BENCHMARKS", "GGUF_FORMATS", "MODEL_DTYPES", "AttackConfig", "CorpusConfig", "EvalConfig",
    "ExportConfig", "ModelConfig", "DEFAULT_LORA_TARGETS", "FinetuneConfig", "ReinforceConfig", "TrainConfig",
    "DEFAULT_TYPE_QUOTAS", "TARGET_RISE_SETTINGS", "AnchorsConfig", "LabelsConfig", "load_yaml", "read_yaml_file",
]
