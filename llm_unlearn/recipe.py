"""Recipes: the typed configuration of a run, loaded from YAML.

A recipe has one section per pipeline stage. Unknown keys and wrong types are errors that name the key and
the file; ``--set section.key=value`` overrides any field from the command line (the value is parsed as YAML,
so ``--set labels.alphas=[2,5]`` works).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from .errors import RecipeError


@dataclass
class ModelConfig:
    spec: str = "smollm2-135m"  # alias, .gguf path, local folder or Hub id
    dtype: str = "auto"  # auto = float32 on CPU, bf16 on GPUs that support it
    device: Optional[str] = None  # default: cuda if available else cpu
    trust_remote_code: bool = False


@dataclass
class CorpusConfig:
    path: Optional[str] = None  # .txt/.md file, folder, .jsonl, or a datasets id
    # More target text, always used whole (start_block/max_blocks slice only ``path``): e.g. articles and
    # discussions about the target, as the paper added synthetic wiki/forum text to the books.
    extra_paths: list = field(default_factory=list)
    text_field: str = "text"  # for .jsonl / datasets
    split: str = "train"  # for datasets ids
    block_size: int = 512
    max_blocks: Optional[int] = None  # use only N blocks (quick runs)
    # which N blocks: "first" (a contiguous slice) or "spread" (evenly spaced over the whole text, so a short
    # run still sees every part of a long corpus: every story of a collection, every chapter of a book)
    block_sampling: str = "first"
    start_block: int = 0  # skip this many blocks first (pick a slice of a long corpus)
    validation_fraction: float = 0.05  # held-out blocks for perplexity / best-checkpoint selection
    seed: int = 0


@dataclass
class AnchorsConfig:
    spacy_model: Optional[str] = None  # default: whichever English pipeline is installed
    top_k: int = 200
    min_count: int = 3
    translations_per_key: int = 3
    include_rare_words: bool = True
    user_dictionary: Optional[str] = None  # YAML/JSON: add, override, or veto (null) keys
    extra: dict = field(default_factory=dict)  # inline user anchors {key: [translations]}
    seed: int = 0
    min_keyness_ratio: float = 5.0  # smoothed corpus / general-English frequency ratio a term needs
    rare_word_zipf: float = 3.0  # a content word is "rare" below this wordfreq Zipf value (3 = once per million)
    type_quotas: dict = field(default_factory=dict)  # max share of top_k per type, e.g. {person: 0.5, noun: 0.2}
    faker_locale: str = "en_US"  # Faker locale for generic names, places, companies
    # Make the distinctive words of multi-word person names keys of their own ("Sherlock" from "Sherlock Holmes"),
    # each by the same count/keyness test as any candidate; hygiene then drops a full name whose words are all keys.
    split_names: bool = True
    # Beyond the paper: a single word of general English (wordfreq Zipf >= ordinary_word_zipf, itself or the word
    # it inflects) that the corpus writes in lower case is not an anchor ("teacup", "whiskers"); nor is a
    # capitalised single word this common in English that is not a known name ("Ministry"). Add such words with
    # the user dictionary when they are target-specific.
    ordinary_word_zipf: float = 2.6
    ordinary_capitalised_zipf: float = 4.5
    # Where generic translations come from: "model" = the base model's own predictions at each occurrence of the
    # term (a model that never heard of the concept would say this here), Faker as the fallback for names;
    # "faker" = Faker names/places and ordinary nouns only.
    substitutes: str = "model"
    substitute_model: Optional[str] = None  # model spec proposing substitutes (default: model.spec of the recipe)
    substitute_occurrences: int = 8  # occurrences per term the model reads
    substitute_context_tokens: int = 32  # left context per occurrence, in tokens
    substitute_batch_size: int = 16
    # substitutes: chat (optional, off by default): a chat model writes them, as GPT-4 did for the paper:
    # "hf:MODEL_SPEC" (local) or "openai:BASE_URL" (OpenAI-compatible endpoint, model name below)
    substitute_chat: Optional[str] = None
    substitute_chat_model: Optional[str] = None
    # Dictionary quality measures recorded by the anchors stage (llm_unlearn/anchors/quality.py): base-model
    # perplexity of translated / original text over up to this many tokens (0 = skip), and kind agreement with a
    # hand-labelled YAML file {kinds: {term: person|animal|place|object|organisation|invented}} when given.
    quality_tokens: int = 4096
    kind_labels: Optional[str] = None


@dataclass
class ReinforceConfig:
    full_finetune: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: list = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj",
                                                          "gate_proj", "up_proj", "down_proj"])
    learning_rate: float = 3e-4
    epochs: float = 2.0
    max_steps: Optional[int] = None
    batch_size: int = 4
    gradient_accumulation: int = 1
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    lr_scheduler: str = "linear"
    eval_every: int = 20  # steps between validation + checkpoint (resume point)
    mixed_precision: str = "no"  # no | bf16 | fp16 (GPU)
    gradient_checkpointing: bool = False
    seed: int = 0


@dataclass
class LabelsConfig:
    alpha: float = 5.0
    alphas: Optional[list] = None  # default [alpha/2, alpha, 2*alpha]
    batch_size: int = 4
    suppress_used_translations: bool = True
    # Beyond the paper: also keep the top-k generic logits of every position (0 = hard labels only), for
    # fine-tuning on soft labels (finetune.soft_labels).
    soft_top_k: int = 0
    # Beyond the paper: also store a per-position weight of how far the generic distribution moved from the base
    # model's ("none" | "kl": 1 - exp(-KL(generic || base)) | "tv": the probability mass the ReLU term removed),
    # as the column position_weights, for finetune.position_weighting.
    position_weight: str = "none"
    seed: int = 0


@dataclass
class FinetuneConfig:
    full_finetune: bool = False
    label_alpha: Optional[float] = None  # which alpha's labels to train on (default: labels.alpha)
    # Beyond the paper (which trains on hard labels, argmax of the generic logits): cross-entropy against
    # softmax(generic logits) over their top-k (labels.soft_top_k > 0). Where nothing target-specific happens the
    # generic distribution is the base model's own, so the model is not sharpened toward its greedy guesses.
    soft_labels: bool = False
    # Beyond the paper: weight each position's label loss by the labels' position_weights column (needs
    # labels.position_weight), so the loss lives where the target does.
    position_weighting: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: list = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj",
                                                          "gate_proj", "up_proj", "down_proj"])
    learning_rate: float = 3e-4
    adam_beta1: float = 0.9
    adam_beta2: float = 0.98
    weight_decay: float = 0.0
    epochs: float = 3.0
    max_steps: Optional[int] = None
    batch_size: int = 4
    gradient_accumulation: int = 1
    warmup_ratio: float = 0.05
    lr_scheduler: str = "linear"
    eval_every: int = 20  # steps between validation + checkpoint
    mixed_precision: str = "no"  # no | bf16 | fp16 (GPU)
    gradient_checkpointing: bool = False
    retain_weight: float = 0.0  # beyond the paper: KL-to-base guard on generic text (0 = off)
    # generic text for the guard: a path or a list of paths, whose blocks alternate (default: WikiText-2 valid)
    retain_corpus: Optional[str | list] = None
    retain_batch_size: Optional[int] = None  # generic blocks per step for the guard (default: batch_size)
    seed: int = 0


@dataclass
class EvalConfig:
    enabled: bool = True
    suites: list = field(default_factory=list)  # folders of prompt suites (JSONL)
    benchmarks: list = field(default_factory=list)  # arc_easy, arc_challenge, boolq, piqa, winogrande, hellaswag
    benchmark_dir: Optional[str] = None  # default ../shared/data/benchmarks
    limit: Optional[int] = None  # items per benchmark
    wikitext: Optional[str] = None  # path to WikiText-2 test.txt (perplexity)
    perplexity_max_tokens: Optional[int] = 20000
    perplexity_window: Optional[int] = 1024  # sliding window (default: min(1024, model context))
    perplexity_stride: int = 512
    wikitext_detokenize: bool = True  # undo WikiText's " @-@ " tokenization, as lm-eval does
    max_new_tokens: int = 24
    batch_size: int = 16
    samples: int = 1  # completions per prompt: 1 = greedy; N > 1 = N seeded samples
    temperature: float = 1.0  # sampling only
    top_p: float = 1.0  # sampling only
    judge: Optional[str] = None  # optional LLM judge: "hf:MODEL_SPEC" or "openai:BASE_URL" (off by default)
    judge_model: Optional[str] = None  # model name for an OpenAI-compatible judge
    lm_eval_tasks: list = field(default_factory=list)  # named lm-eval tasks (needs the network)
    spacy_model: Optional[str] = None  # grading lemmas (default: the installed English pipeline)
    bootstrap: int = 2000  # paired bootstrap resamples
    plots: bool = True
    dtype: str = "auto"  # when evaluate() loads a model spec itself
    device: Optional[str] = None
    seed: int = 0


@dataclass
class ExportConfig:
    merge: bool = True
    push_to_hub: Optional[str] = None  # repo id; token from HF_TOKEN
    private: bool = True


@dataclass
class Recipe:
    name: str = "unlearn"
    target: str = ""  # human-readable name of the concept to forget ("Sherlock Holmes")
    model: ModelConfig = field(default_factory=ModelConfig)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    anchors: AnchorsConfig = field(default_factory=AnchorsConfig)
    reinforce: ReinforceConfig = field(default_factory=ReinforceConfig)
    labels: LabelsConfig = field(default_factory=LabelsConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    export: ExportConfig = field(default_factory=ExportConfig)

    # ---- loading -------------------------------------------------------------------------------------
    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | None = None) -> Recipe:
        path = Path(path)
        if not path.is_file():
            raise RecipeError(f"recipe file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise RecipeError(f"{path}: not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise RecipeError(f"{path}: a recipe must be a mapping of sections, got {type(data).__name__}")
        data = _resolve_relative_paths(data, path.parent)
        recipe = cls.from_dict(data, source=str(path))
        for item in overrides or []:
            recipe = recipe.with_override(item)
        return recipe

    @classmethod
    def from_dict(cls, data: dict, source: str = "<dict>") -> Recipe:
        return _build(cls, data, source, prefix="")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def with_override(self, item: str) -> Recipe:
        """Apply one ``section.key=value`` override (value parsed as YAML)."""
        if "=" not in item:
            raise RecipeError(f"override '{item}' must look like section.key=value")
        dotted, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise RecipeError(f"override '{item}': value is not valid YAML: {exc}") from exc
        data = self.to_dict()
        node = data
        parts = dotted.strip().split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise RecipeError(f"override '{item}': unknown section '{part}'{_did_you_mean(part, node)}")
            node = node[part]
        if parts[-1] not in node:
            raise RecipeError(f"override '{item}': unknown key '{dotted.strip()}'"
                               f"{_did_you_mean(parts[-1], node, '.'.join(parts[:-1]) + '.')}")
        node[parts[-1]] = value
        return Recipe.from_dict(data, source=f"--set {item}")

    def section_hash(self, *sections: str) -> str:
        """Stable hash of some sections, used by the run manifest to decide what must be redone."""
        payload = {s: self.to_dict()[s] for s in sections}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def label_alphas(self) -> list[float]:
        a = self.labels.alpha
        return [float(x) for x in (self.labels.alphas or [a / 2, a, 2 * a])]

    def validate(self) -> None:
        """Value checks beyond types."""
        if self.labels.alpha <= 0 or any(a <= 0 for a in self.label_alphas()):
            raise RecipeError(f"labels.alpha must be > 0 (got {self.labels.alpha}, alphas {self.labels.alphas})")
        if self.corpus.block_size < 8:
            raise RecipeError(f"corpus.block_size must be at least 8 (got {self.corpus.block_size})")
        if not 0 <= self.corpus.validation_fraction < 1:
            raise RecipeError("corpus.validation_fraction must be in [0, 1)")
        for sec in (self.reinforce, self.finetune):
            if sec.learning_rate <= 0 or sec.batch_size < 1 or sec.gradient_accumulation < 1:
                raise RecipeError("learning_rate must be > 0, batch_size and gradient_accumulation >= 1")
        if self.finetune.label_alpha is not None and float(self.finetune.label_alpha) not in self.label_alphas():
            raise RecipeError(
                f"finetune.label_alpha={self.finetune.label_alpha} is not among labels.alphas {self.label_alphas()}"
            )
        if self.labels.soft_top_k < 0:
            raise RecipeError(f"labels.soft_top_k must be >= 0 (got {self.labels.soft_top_k})")
        if self.finetune.soft_labels and self.labels.soft_top_k < 1:
            raise RecipeError("finetune.soft_labels needs the top-k generic logits: set labels.soft_top_k "
                              "(e.g. --set labels.soft_top_k=32)")
        if self.corpus.block_sampling not in ("first", "spread"):
            raise RecipeError(f"corpus.block_sampling must be 'first' or 'spread' (got {self.corpus.block_sampling!r})")
        if self.finetune.mixed_precision not in ("no", "bf16", "fp16"):
            raise RecipeError("finetune.mixed_precision must be one of no, bf16, fp16")


def _did_you_mean(key: str, known, prefix: str = "") -> str:
    import difflib

    close = difflib.get_close_matches(key, sorted(known), n=1)
    return f" (did you mean '{prefix}{close[0]}'?)" if close else f" (known: {', '.join(sorted(known))})"


_PATH_KEYS = {("corpus", "path"), ("anchors", "user_dictionary"), ("eval", "benchmark_dir"), ("eval", "wikitext"),
              ("finetune", "retain_corpus")}
_PATH_LIST_KEYS = {("eval", "suites"), ("corpus", "extra_paths"), ("finetune", "retain_corpus")}


def _resolve_relative_paths(data: dict, base: Path) -> dict:
    """Paths in a recipe starting with ./ or ../ are relative to the recipe file, as users expect."""
    for section, key in _PATH_KEYS:
        sec = data.get(section)
        if isinstance(sec, dict) and isinstance(sec.get(key), str) and sec[key].startswith(("./", "../")):
            sec[key] = str((base / sec[key]).resolve())
    for section, key in _PATH_LIST_KEYS:
        sec = data.get(section)
        if isinstance(sec, dict) and isinstance(sec.get(key), list):
            sec[key] = [str((base / s).resolve()) if isinstance(s, str) and s.startswith(("./", "../")) else s
                        for s in sec[key]]
    return data


_YAML11_MISSED_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def _type_ok(value: Any, hint: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            ok, conv = _type_ok(value, arg)
            if ok:
                return True, conv
        return False, value
    if hint is type(None):
        return value is None, value
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value)
        # PyYAML (YAML 1.1) reads `3e-4` (no dot in the mantissa) as a string: accept such numbers.
        if isinstance(value, str) and _YAML11_MISSED_FLOAT.match(value.strip()):
            return True, float(value)
        return False, value
    if hint is str:
        return isinstance(value, str), value
    if hint is list or origin is list:
        return isinstance(value, list), value
    if hint is dict or origin is dict:
        return isinstance(value, dict), value
    return True, value


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(hint))
    return "null" if hint is type(None) else getattr(hint, "__name__", str(hint))


def _build(cls, data: dict, source: str, prefix: str):
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: '{prefix.rstrip('.') or 'recipe'}' must be a mapping")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        import difflib

        key = unknown[0]
        close = difflib.get_close_matches(key, sorted(names), n=1)
        hint = f" (did you mean '{prefix}{close[0]}'?)" if close else f" (known keys: {', '.join(sorted(names))})"
        raise RecipeError(f"{source}: unknown key '{prefix}{key}'{hint}")
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value or {}, source, prefix=f"{prefix}{name}.")
            continue
        ok, conv = _type_ok(value, hint)
        if not ok:
            raise RecipeError(
                f"{source}: key '{prefix}{name}' must be {_type_name(hint)}, got {type(value).__name__} ({value!r})"
            )
        kwargs[name] = conv
    return cls(**kwargs)
