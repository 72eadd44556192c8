"""The run's plain sections: model, corpus, eval, export, attack."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import ClassVar, Optional

from ..errors import RecipeError
from .checks import _CHAT_SPEC, SectionChecks, did_you_mean

MODEL_DTYPES = ("auto", "float32", "bfloat16", "float16", "fp32", "bf16", "fp16")  # as models.load_model accepts
BLOCK_SAMPLING = ("first", "spread")
# the built-in multiple-choice benchmarks (files in the data folder's benchmarks/, llm_unlearn.evaluation.benchmarks)
BENCHMARKS = ("arc_easy", "arc_challenge", "boolq", "piqa", "winogrande", "hellaswag")
# GGUF formats the attack rounds to (llm_unlearn.gguf_formats.FORMATS)
GGUF_FORMATS = ("Q8_0", "Q5_1", "Q5_0", "Q4_1", "Q4_0", "Q4_K")


@dataclass
class ModelConfig(SectionChecks):
    section: ClassVar[str] = "model"
    spec: str = "smollm2-135m"  # alias, .gguf path, local folder or Hub id
    dtype: str = "auto"  # auto = bf16 compute where native (GPU, CPU with avx512_bf16/amx), else float32
    device: Optional[str] = None  # default: cuda if available else cpu
    trust_remote_code: bool = False

    def validate(self) -> None:
        self._text("spec")
        self._choice("dtype", MODEL_DTYPES)
        self._device("device")
        self._bool("trust_remote_code")



@dataclass
class CorpusConfig(SectionChecks):
    section: ClassVar[str] = "corpus"
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
    # held-out blocks for the relearn attack (split.json "relearn"; no stage trains on them). 0 keeps the split of
    # earlier runs unchanged; the attack then relearns on the validation blocks, which no stage trains on either.
    relearn_fraction: float = 0.0
    seed: int = 0

    def validate(self) -> None:
        self._text("path", optional=True)
        self._texts("extra_paths")
        self._text("text_field")
        self._text("split")
        self._int("block_size", 8)
        self._int("max_blocks", 1, optional=True)
        self._choice("block_sampling", BLOCK_SAMPLING)
        self._int("start_block", 0)
        self._float("validation_fraction", 0, 1, high_open=True)
        self._float("relearn_fraction", 0, 1, high_open=True)
        if self.validation_fraction + self.relearn_fraction >= 1:
            raise RecipeError("corpus.validation_fraction + corpus.relearn_fraction must be < 1, so that training "
                              f"blocks remain (got {self.validation_fraction} + {self.relearn_fraction})")
        self._int("seed", 0)




@dataclass
class EvalConfig(SectionChecks):
    section: ClassVar[str] = "eval"
    enabled: bool = True
    suites: list = field(default_factory=list)  # folders of prompt suites (JSONL)
    benchmarks: list = field(default_factory=list)  # arc_easy, arc_challenge, boolq, piqa, winogrande, hellaswag
    benchmark_dir: Optional[str] = None  # default: the bundled benchmarks (data:benchmarks)
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
    # Beyond the paper: also score the base model on the suites' prompts with the run's anchors replaced by their
    # generic translations (llm_unlearn.whp.floor, F1-F4): where "never knew the target" lies on each suite
    generic_floor: bool = False

    def validate(self) -> None:
        self._bool("enabled", "wikitext_detokenize", "plots", "generic_floor")
        self._texts("suites")
        self._texts("benchmarks")
        unknown = [b for b in self.benchmarks if b not in BENCHMARKS]
        if unknown:
            close = did_you_mean(unknown[0], BENCHMARKS)
            raise RecipeError(f"eval.benchmarks: unknown benchmark '{unknown[0]}'{close}; "
                              f"known: {', '.join(BENCHMARKS)} (other lm-eval tasks go in eval.lm_eval_tasks)")
        self._text("benchmark_dir", optional=True)
        self._int("limit", 1, optional=True)
        self._text("wikitext", optional=True)
        self._int("perplexity_max_tokens", 2, optional=True)
        self._int("perplexity_window", 2, optional=True)
        self._int("perplexity_stride", 1)
        self._int("max_new_tokens", 1)
        self._int("batch_size", 1)
        self._int("samples", 1)
        self._float("temperature", 0, low_open=True)
        self._float("top_p", 0, 1, low_open=True)
        if self.judge is not None and (not isinstance(self.judge, str) or not (
                self.judge.lower() in ("off", "none", "false") or _CHAT_SPEC.match(self.judge))):
            self._fail("judge", "'hf:MODEL_SPEC', 'openai' (endpoint from $LLM_UNLEARN_JUDGE_URL), "
                                "'openai:BASE_URL', 'off' or null")
        self._text("judge_model", optional=True)
        self._texts("lm_eval_tasks")
        self._text("spacy_model", optional=True)
        self._int("bootstrap", 1)
        self._choice("dtype", MODEL_DTYPES)
        self._device("device")
        self._int("seed", 0)



@dataclass
class AttackConfig(SectionChecks):
    """Does the forgetting hold? Attacks on the unlearned model (llm_unlearn.attacks), scored like eval."""

    section: ClassVar[str] = "attack"
    enabled: bool = False  # the pipeline's attack stage runs only when true
    attacks: list = field(default_factory=list)  # names (default: every attack whose inputs are present)
    suites: list = field(default_factory=list)  # default: eval.suites
    relearn_steps: list = field(default_factory=lambda: [20, 100])  # optimizer steps (snapshots of one run)
    relearn_lr: Optional[float] = None  # default: finetune.learning_rate
    relearn_batch_size: int = 4
    relearn_block_size: int = 256
    relearn_lora_r: int = 16
    relearn_texts: list = field(default_factory=list)  # other text to relearn from: paths (NAME=PATH to label)
    relearn_control: bool = True  # also relearn the base model (the fair control)
    in_context_k: list = field(default_factory=lambda: [3, 10])
    quant_bits: list = field(default_factory=lambda: [8, 4])
    quant_group_size: int = 128
    # GGUF formats (llama.cpp's deployment rounding; the base's own format is always added when it came from GGUF)
    quant_formats: list = field(default_factory=lambda: ["Q8_0", "Q4_1", "Q4_0", "Q5_0", "Q4_K"])
    languages: Optional[list] = None  # default: every language the suite holds
    chat_max_new_tokens: int = 48
    bootstrap: int = 1000
    seed: int = 0

    def validate(self) -> None:
        self._bool("enabled", "relearn_control")
        self._texts("attacks")
        self._texts("suites")
        self._texts("relearn_texts")
        self._int("relearn_batch_size", 1)
        self._int("relearn_block_size", 8)
        self._int("relearn_lora_r", 1)
        self._int("quant_group_size", 1)
        self._int("chat_max_new_tokens", 1)
        self._int("bootstrap", 0)
        self._int("seed", 0)
        self._float("relearn_lr", 0, low_open=True, optional=True)
        if self.languages is not None:
            self._texts("languages")
        if not isinstance(self.relearn_steps, list) or any(
                not isinstance(n, int) or isinstance(n, bool) or n < 1 for n in self.relearn_steps):
            raise RecipeError(f"attack.relearn_steps must be positive integers (got {self.relearn_steps})")
        if not isinstance(self.in_context_k, list) or any(
                not isinstance(k, int) or isinstance(k, bool) or k < 1 for k in self.in_context_k):
            raise RecipeError(f"attack.in_context_k must be positive integers (got {self.in_context_k})")
        if not isinstance(self.quant_bits, list) or any(b not in (2, 3, 4, 8) for b in self.quant_bits):
            raise RecipeError(f"attack.quant_bits must be among 2, 3, 4, 8 (got {self.quant_bits})")
        if not isinstance(self.quant_formats, list) or any(f not in GGUF_FORMATS for f in self.quant_formats):
            raise RecipeError(f"attack.quant_formats must be among {', '.join(GGUF_FORMATS)} "
                              f"(got {self.quant_formats})")


@dataclass
class ExportConfig(SectionChecks):
    section: ClassVar[str] = "export"
    merge: bool = True
    push_to_hub: Optional[str] = None  # repo id; token from HF_TOKEN
    private: bool = True

    def validate(self) -> None:
        self._bool("merge", "private")
        self._text("push_to_hub", optional=True)
        if self.push_to_hub is not None and not re.match(r"^[\w.-]+(/[\w.-]+)?$", self.push_to_hub):
            self._fail("push_to_hub", "a Hub repo id like 'your-name/model-name'")



