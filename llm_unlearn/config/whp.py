"""WHP's own sections: the anchor dictionary and the generic-prediction labels."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Optional

from ..errors import RecipeError
from .checks import _CHAT_SPEC, SectionChecks, _number_in

# the most of anchors.top_k each entity type may take by default (anchors.type_quotas overrides)
DEFAULT_TYPE_QUOTAS = {"person": 0.5, "place": 0.3, "org": 0.15, "group": 0.05, "title": 0.1, "proper": 0.2,
                       "noun": 0.2}


@dataclass
class AnchorsConfig(SectionChecks):
    section: ClassVar[str] = "anchors"
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
    # Where generic translations come from: "faker" = Faker names/places and ordinary nouns; "model" = the base
    # model's own predictions at each occurrence of the term (what a model that never heard of the concept would
    # say there), Faker as the fallback for names. Measured (docs/results.md): "model" makes translated text read
    # closer to the original on both books and fits Alice's animals and objects better, but picks worse person
    # names on Sherlock and costs minutes of CPU on a whole book; on the demo it gives the same unlearned model
    # within noise, so it is not the default.
    substitutes: str = "faker"
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
    # Beyond the paper (llm_unlearn/anchors/kinds.py, period.py): "evidence" = each term's kind of substitute and a
    # person's gender from cues at all its mentions (rules K1-K15, G1-G4); "ner" = spaCy's labels, Faker's name
    # lists for gender. period_words: ordinary words of another time or dialect spellings are not anchors (D1-D4).
    kinds: str = "evidence"
    period_words: bool = True

    def validate(self) -> None:
        self._text("spacy_model", optional=True)
        self._int("top_k", 1)
        self._int("min_count", 1)
        self._int("translations_per_key", 1)
        self._bool("include_rare_words", "split_names")
        self._text("user_dictionary", optional=True)
        if not isinstance(self.extra, dict) or not all(
                isinstance(k, str) and k.strip() and (v is None or (isinstance(v, str) and v.strip()) or (
                    isinstance(v, list) and all(isinstance(t, str) and t.strip() for t in v)))
                for k, v in self.extra.items()):
            self._fail("extra", "a mapping {term: [translations] or null to veto} of non-empty strings")
        self._int("seed", 0)
        self._float("min_keyness_ratio", 1)
        self._float("rare_word_zipf", 0, 8)
        if not isinstance(self.type_quotas, dict) or not all(
                k in DEFAULT_TYPE_QUOTAS and _number_in(v, 0, 1, False, False) for k, v in self.type_quotas.items()):
            self._fail("type_quotas", f"a mapping of types ({', '.join(DEFAULT_TYPE_QUOTAS)}) to shares in [0, 1]")
        self._text("faker_locale")
        self._float("ordinary_word_zipf", 0, 8)
        self._float("ordinary_capitalised_zipf", 0, 8)
        self._choice("substitutes", ("faker", "model", "chat"))
        self._choice("kinds", ("evidence", "ner"))
        self._bool("period_words")
        self._text("substitute_model", optional=True)
        self._int("substitute_occurrences", 1)
        self._int("substitute_context_tokens", 1)
        self._int("substitute_batch_size", 1)
        self._text("substitute_chat", optional=True)
        self._text("substitute_chat_model", optional=True)
        if self.substitutes == "chat" and not self.substitute_chat:
            raise RecipeError("anchors.substitutes: chat needs anchors.substitute_chat ('hf:MODEL_SPEC' or "
                              "'openai'; the endpoint comes from $LLM_UNLEARN_CHAT_URL)")
        if self.substitute_chat is not None and not _CHAT_SPEC.match(self.substitute_chat):
            self._fail("substitute_chat", "'hf:MODEL_SPEC', 'openai' (endpoint from $LLM_UNLEARN_CHAT_URL) or "
                                          "'openai:BASE_URL'")
        self._int("quality_tokens", 0)
        self._text("kind_labels", optional=True)




# recipe refuses them away from it under rise_tokens "all", and the pipeline leaves them out of stage hashes at it
# labels settings that refine ``rise_tokens: target`` (R5), each with the value that means "off": the recipe refuses
# them away from it under rise_tokens "all", and the pipeline leaves them out of stage hashes at it
TARGET_RISE_SETTINGS = {"rise_near_anchor": 0}


@dataclass
class LabelsConfig(SectionChecks):
    section: ClassVar[str] = "labels"
    alpha: float = 5.0
    alphas: Optional[list] = None  # default [alpha/2, alpha, 2*alpha]
    batch_size: int = 4
    suppress_used_translations: bool = True
    # Beyond the paper: also keep the top-k generic logits of every position (0 = hard labels only), for
    # fine-tuning on soft labels (finetune.soft_labels).
    soft_top_k: int = 0
    # Beyond the paper: which tokens the ReLU term may push down: "all" (the paper) or "target" (only tokens of the
    # target's own words, rise_keyness times more frequent in the corpus than in general English, and of the anchor
    # keys; llm_unlearn.whp.labels, rules R1-R3), so the target's style is not unlearned from every similar text
    rise_tokens: str = "all"
    rise_keyness: float = 5.0
    # With rise_tokens "target": from the position before an anchor to this many positions after it, every token's
    # rise counts (R5; 0 = off): the book's continuation of its own names is the target's, its style elsewhere is not
    rise_near_anchor: int = 0
    seed: int = 0

    def validate(self) -> None:
        self._float("alpha", 0, low_open=True)
        if self.alphas is not None and (not isinstance(self.alphas, list) or not self.alphas or not all(
                _number_in(a, 0, None, True, False) for a in self.alphas)):
            self._fail("alphas", "a non-empty list of finite numbers > 0, or null")
        self._int("batch_size", 1)
        self._bool("suppress_used_translations")
        self._int("soft_top_k", 0)
        self._choice("rise_tokens", ("all", "target"))
        self._float("rise_keyness", 1)
        self._int("rise_near_anchor", 0)
        # R5 refines which tokens' rise counts under rise_tokens: target; with "all" every token's rise
        # counts everywhere, so a setting away from its off value would silently do nothing
        for name, off in TARGET_RISE_SETTINGS.items():
            if getattr(self, name) != off and self.rise_tokens != "target":
                off_text = str(off).lower()
                self._fail(name, f"{off_text} unless labels.rise_tokens is target (with 'all' every token's rise "
                                 f"counts everywhere); set labels.rise_tokens=target or leave {name} at {off_text}")
        self._int("seed", 0)



