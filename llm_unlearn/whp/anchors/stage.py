"""The anchors stage whole: extraction, selection, substitutes, the user dictionary, quality measures; and the
pipeline's stage function (corpus blocks -> anchors/anchors.yaml)."""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterable, Mapping

from ...config import AnchorsConfig
from ...errors import AnchorError
from ...keylinks import key_links
from .dictionary import AnchorDictionary, AnchorEntry
from .extraction import FEMALE_TITLES, MALE_TITLES, NEUTRAL_TITLES, TITLES, _Stats, collect_stats, load_spacy
from .selection import _COMMON_NOUN_ZIPF, Candidate, faker_lists, score_candidates, select_candidates
from .substitutes import make_translations

logger = logging.getLogger(__name__)


# ---- the whole stage --------------------------------------------------------------------------------------
def _check_config(config: AnchorsConfig) -> None:
    """The section's own checks (:meth:`AnchorsConfig.validate`, the one validation path) and the Faker locale,
    which needs Faker itself."""
    config.validate()
    from faker import Faker

    try:
        Faker(config.faker_locale)
    except AttributeError as exc:
        raise AnchorError(f"anchors.faker_locale: '{config.faker_locale}' is not a Faker locale "
                          "(e.g. en_US, en_GB)") from exc


def _user_keys(config: AnchorsConfig) -> set[str]:
    """Keys of the user dictionary and ``extra`` (read early so that no substitute is one of them)."""
    user = AnchorDictionary()
    for source in (config.user_dictionary, config.extra):
        if source:
            user.merge(source)
    return set(user.keys())


def _key_gender(key: str, cand: Candidate, lists: Mapping[str, frozenset[str]]) -> str | None:
    """A person's gender from honorifics seen in the corpus, else from Faker's given-name lists."""
    votes = Counter((cand.info or {}).get("gender") or {})
    if votes:
        return votes.most_common(1)[0][0]
    w = key.split(" ")[0].lower()
    if w in lists["female"] and w not in lists["male"]:
        return "f"
    if w in lists["male"] and w not in lists["female"]:
        return "m"
    return None


def model_proposals(model, selected: list[Candidate], ranked: list[Candidate], texts: list[str], st: _Stats,
                    config: AnchorsConfig, stop_words=(), progress: bool = False, nlp=None,
                    skip: Iterable[str] = ()) -> dict[str, list[str]]:
    """Substitutes proposed by the base model for the selected keys that will not be built from linked keys
    (:mod:`.proposals`, rules P1-P7). ``model``: a model spec, or a ``(model, tokenizer)`` pair."""
    from wordfreq import zipf_frequency

    from .proposals import propose_substitutes

    if isinstance(model, (tuple, list)):
        lm, tokenizer = model
    else:
        from ...models import load_model

        lm, tokenizer = load_model(str(model))
    lm.eval()
    texts_set = {c.text for c in selected}
    skip = set(skip)
    keys = [c.text for c in selected if key_links(c.text, texts_set) == (None, None) and c.text not in skip
            and not (c.text.endswith("s") and c.text[:-1] in texts_set)]
    forbidden = {w.lower().replace("’", "'") for c in ranked for w in c.text.split(" ")}
    forbidden |= {w.lower().replace("’", "'") for k in _user_keys(config) for w in k.split(" ")}
    lists = faker_lists(config.faker_locale)
    persons = [c for c in selected if c.type == "person"]
    names = lists["female"] | lists["male"] | lists["last"]

    def common(word: str) -> bool:  # an ordinary English word that is not a name (rule P9)
        return word.lower() not in names and zipf_frequency(word, "en") >= _COMMON_NOUN_ZIPF

    noun_like = [k for k in keys if all(common(w) for w in k.split(" "))]
    person_keys = {c.text for c in persons}
    heads = {k: k.split(" ")[-1] for k in keys
             if " " in k and k[:1].isupper() and common(k.split(" ")[-1]) and (k not in person_keys or k in noun_like)}
    found = propose_substitutes(
        lm, tokenizer, texts, keys, forbidden, stop_words=stop_words, titles=TITLES,
        person_keys=person_keys, person_names=lists["female"] | lists["male"] | lists["last"],
        genders={c.text: g for c in persons if (g := _key_gender(c.text, c, lists))},
        female=lists["female"], male=lists["male"], noun_like=noun_like, heads=heads, nlp=nlp,
        occurrences=config.substitute_occurrences, context_tokens=config.substitute_context_tokens,
        want=config.translations_per_key, max_per_key=max(2 * config.translations_per_key, 6),
        batch_size=config.substitute_batch_size, progress=progress)
    logger.info("anchors: the model proposed substitutes for %d of %d keys", len(found), len(keys))
    return {k: [p.text for p in v] for k, v in found.items()}


def chat_proposals(selected: list[Candidate], ranked: list[Candidate], texts: list[str], config: AnchorsConfig,
                   stop_words=(), target: str = "", writer=None) -> dict[str, list[str]]:
    """Substitutes written by the chat model ``config.substitute_chat`` (:mod:`.chat`, rules C1-C3) for the keys
    not built from linked keys. ``writer`` replaces the configured chat model (tests)."""
    from .chat import chat_substitutes, make_writer

    if writer is None:
        writer = make_writer(config.substitute_chat, config.substitute_chat_model)
    texts_set = {c.text for c in selected}
    keys = [c.text for c in selected if key_links(c.text, texts_set) == (None, None)
            and not (c.text.endswith("s") and c.text[:-1] in texts_set)]
    forbidden = {w.lower().replace("’", "'") for c in ranked for w in c.text.split(" ")}
    forbidden |= {w.lower().replace("’", "'") for k in _user_keys(config) for w in k.split(" ")}
    return chat_substitutes(writer, texts, keys, target, config.translations_per_key, forbidden, stop_words, TITLES)


def build_anchor_dictionary(texts: list[str], config: AnchorsConfig, progress: bool = True,
                            model=None, target: str = "", chat_writer=None) -> AnchorDictionary:
    """Extraction + generic translations + the user dictionary (``config.user_dictionary`` then
    ``config.extra``) + hygiene. Returns an empty dictionary when nothing qualifies (the caller warns).

    With ``config.substitutes == "model"``, substitutes come from ``config.substitute_model`` or else ``model``
    (a model spec, or a ``(model, tokenizer)`` pair); with neither, from Faker. With ``"chat"``, the chat model
    ``config.substitute_chat`` writes them first (``target`` names the concept in its prompt), then as above."""
    import time

    _check_config(config)
    if isinstance(texts, str):
        texts = [texts]
    texts = [t for t in texts if isinstance(t, str) and t.strip()]
    t0 = time.perf_counter()
    entries: list[AnchorEntry] = []
    if texts:
        nlp = load_spacy(config.spacy_model)
        stop_words = nlp.Defaults.stop_words
        st = collect_stats(texts, nlp, progress=progress)
        ranked = score_candidates(st, config, stop_words)
        if config.period_words:  # rules D1-D3 (.period)
            from .period import drop_period_words

            ranked = drop_period_words(ranked, texts, st.total_words, faker_lists(config.faker_locale),
                                       limit=3 * config.top_k)
        selected = select_candidates(ranked, config)
        if config.kinds == "evidence":  # rules K1-K14, G1-G3 (.kinds)
            from .kinds import assign_kinds

            assign_kinds(selected, texts, st, faker_lists(config.faker_locale),
                         {"f": FEMALE_TITLES, "m": MALE_TITLES, "n": NEUTRAL_TITLES})
            selected = [c for c in selected if not (config.period_words and c.info.get("drop"))]  # rule D4
        proposals: dict[str, list[str]] = {}
        if config.substitutes == "chat" and selected:
            proposals = chat_proposals(selected, ranked, texts, config, stop_words, target, chat_writer)
        source = config.substitute_model or model
        if config.substitutes in ("model", "chat") and source is not None and selected:
            proposals.update(model_proposals(source, selected, ranked, texts, st, config, stop_words, progress, nlp,
                                             skip=proposals))
        elif config.substitutes == "model":
            logger.info("anchors: no model to propose substitutes; using Faker (anchors.substitutes=faker)")
        entries = make_translations(selected, st, config, nlp, stop_words, proposals)
        logger.info("anchors: %d candidates scored, %d kept from %d words in %.1f s", len(ranked), len(entries),
                    st.total_words, time.perf_counter() - t0)
    dictionary = AnchorDictionary(entries)
    generated = {e.key: tuple(e.translations) for e in entries}  # to tell extracted keys from a user's
    if config.user_dictionary:
        dictionary.merge(config.user_dictionary)
    if config.extra:
        dictionary.merge(config.extra)
    dictionary.apply_hygiene()
    dictionary.check("anchors" if not config.user_dictionary else str(config.user_dictionary))
    if texts and len(dictionary):
        dictionary.recount(texts)
        # A name part that only ever occurs inside a full name that stays a key ("Burnwell" of "George Burnwell")
        # is never replaced: drop it (extracted keys only; keys the user gave or changed stay).
        unused = [e.key for e in dictionary.entries()
                  if e.count == 0 and generated.get(e.key) == tuple(e.translations)]
        for key in unused:
            del dictionary._entries[key]
        if unused:
            logger.info("anchors: %d extracted keys never occur outside longer keys, dropped: %s", len(unused),
                        ", ".join(unused))
    return dictionary


def measure_dictionary(dictionary: AnchorDictionary, texts: list[str], config: AnchorsConfig, model=None,
                       progress: bool = False) -> dict:
    """Quality measures of a dictionary (:mod:`.quality`): the perplexity ratio (rule Q1) with ``model`` (a
    ``(model, tokenizer)`` pair; skipped without one or with ``quality_tokens=0``) and the kind agreement (rule
    Q2) and gender agreement (rule Q3) with ``config.kind_labels`` when set."""
    from .quality import gender_agreement, kind_agreement, load_kind_labels, perplexity_ratio

    out: dict = {}
    if model is not None and config.quality_tokens > 0 and len(dictionary):
        lm, tokenizer = model
        out["perplexity"] = perplexity_ratio(lm, tokenizer, dictionary, texts, max_tokens=config.quality_tokens,
                                             seed=config.seed, progress=progress)
    if config.kind_labels:
        labels = load_kind_labels(config.kind_labels)
        agreement = kind_agreement(dictionary, labels)
        out["kinds"] = {k: v for k, v in agreement.items() if k != "per_term"}
        out["genders"] = {k: v for k, v in gender_agreement(dictionary, labels).items() if k != "per_term"}
    return out


def run_anchor_stage(texts: list[str], config: AnchorsConfig, model_spec: str | None = None, load_kwargs=None,
                     progress: bool = True, target: str = "") -> tuple[AnchorDictionary, dict]:
    """The anchors stage: build the dictionary (the base model ``model_spec`` proposing substitutes unless
    ``config.substitute_model`` names another) and measure it. Returns the dictionary and the stage's metrics."""
    from ...models import load_model

    _check_config(config)
    load_kwargs = dict(load_kwargs or {})
    base = None
    wants_base = config.substitutes in ("model", "chat") and not config.substitute_model
    if model_spec and (config.quality_tokens > 0 or wants_base):
        base = load_model(model_spec, **load_kwargs)
    proposer = base if wants_base else None
    dictionary = build_anchor_dictionary(texts, config, progress=progress, model=proposer, target=target)
    metrics: dict = {"anchors": len(dictionary), "top": list(dictionary.keys())[:20],
                     "substitutes": config.substitutes if (proposer or config.substitute_model
                                                           or config.substitutes == "chat") else "faker"}
    metrics.update(measure_dictionary(dictionary, texts, config, base, progress=progress))
    return dictionary, metrics


def run_anchors(run, recipe, progress: bool = True) -> dict:
    """corpus/blocks.jsonl -> anchors/anchors.yaml (spaCy extraction + substitutes + user dictionary)."""
    from ...corpus import whole_corpus_texts

    # Anchors are scored on the WHOLE corpus, even when only a slice is unlearned (corpus.max_blocks): term
    # counts over more text separate target-specific names from ordinary words far better.
    texts = whole_corpus_texts(recipe.corpus)
    m = recipe.model
    dictionary, metrics = run_anchor_stage(texts, recipe.anchors, m.spec, progress=progress, target=recipe.target,
                                           load_kwargs={"dtype": m.dtype, "device": m.device,
                                                        "trust_remote_code": m.trust_remote_code})
    warn_unmatched_vetoes(dictionary.vetoed, texts)
    if len(dictionary) == 0:
        logger.warning("anchors: no anchored terms found; continuing with the logit offset alone")
    dictionary.save(run.anchors)
    return metrics


def warn_unmatched_vetoes(vetoed: list[str], texts: list[str]) -> list[str]:
    """Warn about vetoes (``Key: null``) that match nothing in the corpus: a typo or another case, so the term
    the user meant to keep untranslated may still be translated. Returns the warnings."""
    warnings = []
    for key in vetoed:
        pattern = r"(?<!\w)" + r"\s+".join(re.escape(w) for w in key.split()) + r"(?!\w)"
        if any(re.search(pattern, t) for t in texts):
            continue
        other = next((m.group(0) for t in texts for m in [re.search(pattern, t, re.IGNORECASE)] if m), None)
        hint = f" (the corpus has '{other}'; vetoes are case-sensitive)" if other else ""
        warnings.append(f"anchors: the veto '{key}' matches nothing in the corpus{hint}")
        logger.warning(warnings[-1])
    return warnings
