"""Measures of an anchor dictionary's quality, reported by ``llm-unlearn anchors`` and the anchors stage.

Q1. Perplexity ratio: the base model's perplexity of translated blocks divided by its perplexity of the original
    blocks (blocks that hold at least one anchor, spread evenly over the corpus, up to ``max_tokens`` original
    tokens). Generic labels are the base model's predictions on translated text: substitutes that do not fit
    make that text unnatural (ratio well above 1) and the labels noisy. ``ratio_kept`` compares only the positions
    the labels stage keeps (outside anchors), each predicting its next token in its own text.
Q2. Kind agreement: against a hand-labelled list of terms (``kinds: {term: kind}``, kinds in ``KINDS``), the
    share of each labelled key's translations whose kind, as judged by :func:`substitute_kinds`, is compatible
    with the term's kind (``COMPATIBLE``); averaged over the labelled terms that are keys (``top``: among the
    dictionary's first ``top`` keys only). The judge uses Faker's name and place lists, honorifics, company words,
    wordfreq and the word lists of :mod:`.lexicon` (animals, pet names, objects, games, spells, school subjects,
    events, peoples, role names): a word can be of several kinds ("Max": a person or a pet). ``coverage`` is the
    share of the judged keys that are labelled.
    The same file may list ``not_anchors``: ordinary words that must not be keys (reported as ``unwanted``).
Q3. Gender agreement: against ``genders: {term: f | m}`` in the same file, the share of the labelled persons'
    translations that are given names of the term's gender (Faker's female / male lists; a name in both, or
    in neither but in :data:`.lexicon.UNISEX_NAMES`, is neutral and counts as a miss); translations whose first
    word is no given name, or is a surname too ("Allen", "James": Faker's surname list), are not counted. Over
    all such translations of the labelled keys.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from ...errors import AnchorError

KINDS = ("person", "animal", "pet", "place", "object", "organisation", "group", "title", "game", "spell", "subject",
         "event", "invented")
# Which judged kinds of a substitute fit each hand-labelled kind of a term (rule Q2).
COMPATIBLE = {
    "person": {"person"},
    "animal": {"animal"},
    "pet": {"pet"},
    "object": {"object"},
    "place": {"place"},
    "organisation": {"organisation", "thing"},
    "group": {"group"},
    "title": {"title", "thing", "name", "organisation"},
    "game": {"game"},
    "spell": {"spell"},
    "subject": {"subject"},
    "event": {"event"},
    "invented": {"thing", "name", "place", "organisation", "animal", "object", "group", "pet"},
}
GENDERS = ("f", "m")
_ORG_WORDS = {"ltd", "inc", "llc", "plc", "group", "company", "co", "corporation", "corp", "sons", "bank", "society",
              "club", "council", "ministry", "office", "department", "association", "church", "army", "party",
              "court", "board", "committee", "league", "union", "firm", "agency", "school", "college", "university"}
_TOWN_ENDINGS = re.compile(r"(ton|ville|burgh|borough|bury|shire|stad|side|port|haven|mouth|land|berg|chester|ford|"
                           r"field|furt|fort|view|town|mouth|wood|ham|ley)$", re.IGNORECASE)


def load_kind_labels(path: str | Path) -> dict:
    """Read a hand-labelled kinds file: ``{kinds: {term: kind}, genders: {term: f|m}, not_anchors: [word, ...]}``."""
    from ...config.yamlio import read_yaml_file

    path = Path(path)
    if not path.is_file():
        raise AnchorError(f"kind labels not found: {path}")
    data = read_yaml_file(path, AnchorError, "kind labels file") or {}
    kinds = data.get("kinds") if isinstance(data, Mapping) else None
    if not isinstance(kinds, Mapping):
        raise AnchorError(f"{path}: expected a mapping with 'kinds: {{term: kind}}' (kinds: {', '.join(KINDS)})")
    bad = {t: k for t, k in kinds.items() if k not in KINDS}
    if bad:
        raise AnchorError(f"{path}: unknown kind(s) {bad}; use one of {', '.join(KINDS)}")
    not_anchors = data.get("not_anchors") or []
    if not isinstance(not_anchors, list):
        raise AnchorError(f"{path}: 'not_anchors' must be a list of words")
    genders = data.get("genders") or {}
    if not isinstance(genders, Mapping) or any(g not in GENDERS for g in genders.values()):
        raise AnchorError(f"{path}: 'genders' must map person terms to f or m")
    bad = [t for t in genders if kinds.get(t) != "person"]
    if bad:
        raise AnchorError(f"{path}: genders given for terms not labelled person: {bad}")
    return {"kinds": {str(t): str(k) for t, k in kinds.items()}, "not_anchors": [str(w) for w in not_anchors],
            "genders": {str(t): str(g) for t, g in genders.items()}}


def substitute_kind(text: str, lists: Mapping[str, frozenset[str]] | None = None) -> str:
    """Judge the kind of a substitute: person | place | organisation | thing (a common noun) | name (another
    proper name). See rule Q2 for what the judge can and cannot tell."""
    from wordfreq import zipf_frequency

    from .extraction import TITLES
    from .selection import faker_lists

    lists = lists or faker_lists()
    words = [w.strip(".,'’").lower() for w in text.split()]
    words = [w[:-2] if w.endswith(("'s", "’s")) else w for w in words if w]
    if not words:
        return "name"
    names = lists["female"] | lists["male"] | lists["last"]
    if words[-1] in _ORG_WORDS or (len(words) > 1 and words[-2:] == ["and", "sons"]):
        return "organisation"
    if all(w in names or w in TITLES for w in words if w not in ("of", "the", "de", "van", "von")):
        return "person"
    if (text.lower() in lists["places"] or (len(words) > 1 and words[-1] in lists["place_heads"])
            or (text[:1].isupper() and any(zipf_frequency(w, "en") < 3.0 and _TOWN_ENDINGS.search(w)
                                           for w in words))):
        return "place"
    if zipf_frequency(words[-1], "en") >= 3.0 or text.islower():
        return "thing"
    return "name"


def substitute_kinds(text: str, lists: Mapping[str, frozenset[str]] | None = None) -> set[str]:
    """Rule Q2's judge: every kind ``text`` can be (:func:`substitute_kind`'s, plus the :mod:`.lexicon` lists')."""
    from . import lexicon as lx

    out = {substitute_kind(text, lists)}
    words = text.split()
    if not words:
        return out
    head = words[-1].strip(".,'’")
    low = head.lower()
    forms = {w.lower() for w in lx.singulars(head)}
    for kind, pool in (("animal", lx.CREATURES), ("pet", lx.PET_NAMES), ("object", lx.OBJECTS), ("game", lx.GAMES),
                       ("spell", lx.SPELLS), ("subject", lx.SUBJECTS), ("event", lx.EVENTS), ("group", lx.PEOPLES),
                       ("group", lx.NATIONALITIES), ("person", lx.ROLES), ("title", lx.TITLES)):
        if forms & {w.lower() for w in pool}:
            out.add(kind)
    if forms & lx.ANIMALS:
        out.add("animal")
    if "of" in [w.lower() for w in words[1:]]:  # "Weaver of Hearts", "Land of Green": judge the part before "of"
        before = words[:[w.lower() for w in words].index("of")]
        out |= substitute_kinds(" ".join(before), lists)
        if before[-1].lower() in lx.PLACE_HEADS:
            out.add("place")
    first = words[0].lower()
    if len(words) > 1 and (first in lx.PLACE_FIRST or first in _CITY_PREFIXES or low in lx.PLACE_HEADS):
        out.add("place")  # "Lake Kenneth", "Castle Cook", "Wallace Farm"
    if low.endswith("s") and any(substitute_kind(" ".join(words[:-1] + [f]), lists) == "person"
                                 for f in lx.singulars(head)[1:]):
        out.add("person")  # a family: "Montgomerys"
    if forms & lx.OBJECT_HEADS:
        out.add("object")
    if forms & lx.TITLE_HEADS:
        out.add("title")
    return out


_CITY_PREFIXES = {"lake", "port", "new", "north", "south", "east", "west", "fort", "mount", "saint"}


def _top(dictionary, top: int | None) -> list[str]:
    keys = dictionary.keys()
    return keys[:top] if top else keys


def kind_agreement(dictionary, labels: Mapping, top: int | None = None) -> dict:
    """Rule Q2 for one dictionary and one hand-labelled file (as :func:`load_kind_labels` returns it)."""
    from .dictionary import _canon
    from .selection import faker_lists

    lists = faker_lists()
    judged_keys = _top(dictionary, top)
    keys = {_canon(k).lower(): k for k in judged_keys}
    per_term = {}
    for term, kind in labels["kinds"].items():
        key = keys.get(_canon(term).lower())
        if key is None:
            continue
        translations = dictionary.translations(key)
        judged = [sorted(substitute_kinds(t, lists)) for t in translations]
        ok = [bool(set(j) & COMPATIBLE[kind]) for j in judged]
        per_term[key] = {"kind": kind, "type": dictionary.entry(key).type, "translations": translations,
                         "judged": judged, "agreement": sum(ok) / len(ok) if ok else 0.0}
    unwanted = [w for w in labels.get("not_anchors", []) if _canon(w).lower() in keys]
    scores = [v["agreement"] for v in per_term.values()]
    return {"agreement": sum(scores) / len(scores) if scores else None, "labelled_terms": len(labels["kinds"]),
            "labelled_keys": len(per_term), "judged_keys": len(judged_keys),
            "coverage": len(per_term) / len(judged_keys) if judged_keys else None, "unwanted_keys": unwanted,
            "per_term": per_term}


def given_name_gender(word: str, lists: Mapping[str, frozenset[str]] | None = None) -> str | None:
    """Rule Q3: "f", "m" or "n" (neutral) for a given name, None when ``word`` is no given name."""
    from .lexicon import UNISEX_NAMES
    from .selection import faker_lists

    lists = lists or faker_lists()
    w = word.strip(".,").lower()
    if w in lists["last"]:
        return None  # a surname as well ("Allen", "James"): not judged
    f, m = w in lists["female"], w in lists["male"]
    if f and m or (not f and not m and w in {n.lower() for n in UNISEX_NAMES}):
        return "n"
    return "f" if f else "m" if m else None


def gender_agreement(dictionary, labels: Mapping, top: int | None = None) -> dict:
    """Rule Q3 for one dictionary and one hand-labelled file."""
    from .dictionary import _canon
    from .selection import faker_lists

    lists = faker_lists()
    keys = {_canon(k).lower(): k for k in _top(dictionary, top)}
    per_term, hits, total = {}, 0, 0
    for term, gender in labels.get("genders", {}).items():
        key = keys.get(_canon(term).lower())
        if key is None:
            continue
        translations = dictionary.translations(key)
        judged = [given_name_gender(t.split(" ")[0], lists) for t in translations]
        counted = [g for g in judged if g is not None]
        if not counted:
            continue
        ok = sum(g == gender for g in counted)
        hits += ok
        total += len(counted)
        per_term[key] = {"gender": gender, "translations": translations, "judged": judged,
                         "agreement": ok / len(counted)}
    return {"agreement": hits / total if total else None, "given_names": total, "labelled_keys": len(per_term),
            "per_term": per_term}


def _token_nll(model, batch_ids: list[list[int]], pad_id: int) -> list:
    """Per-sequence arrays of next-token negative log-likelihoods (position i predicts token i + 1)."""
    import torch

    from ...batching import pad_ids

    device = next(model.parameters()).device
    ids, att = pad_ids(batch_ids, pad_id)
    with torch.inference_mode():
        logits = model(input_ids=ids.to(device), attention_mask=att.to(device), use_cache=False).logits.float()
        logp = torch.log_softmax(logits[:, :-1], -1)
        nll = -logp.gather(-1, ids[:, 1:].to(device).unsqueeze(-1)).squeeze(-1).cpu().numpy()
    return [nll[i, :len(s) - 1] for i, s in enumerate(batch_ids)]


def perplexity_ratio(model, tokenizer, dictionary, texts: Sequence[str], max_tokens: int = 4096,
                     block_size: int = 256, seed: int = 0, batch_size: int = 4, progress: bool = False) -> dict:
    """Rule Q1: base-model perplexity of translated blocks / original blocks."""
    import numpy as np
    from tqdm.auto import tqdm

    from ...corpus import Document, make_blocks
    from ..translation import Translator

    if not len(dictionary) or max_tokens <= 0:
        return {}
    blocks = make_blocks([Document(f"doc{i}", t) for i, t in enumerate(texts)], tokenizer, block_size)
    translator = Translator(dictionary, tokenizer)
    with_anchors = [i for i, b in enumerate(blocks) if translator.find(b.text)]
    if not with_anchors:
        return {}
    want = max(1, min(len(with_anchors), max_tokens // block_size))
    picks = [with_anchors[round(k * (len(with_anchors) - 1) / max(want - 1, 1))] for k in range(want)]
    picks = list(dict.fromkeys(picks))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    tot = {"orig": 0.0, "tr": 0.0, "orig_kept": 0.0, "tr_kept": 0.0}
    n_orig = n_tr = n_kept = n_anchor = 0
    for b0 in tqdm(range(0, len(picks), batch_size), desc="anchors: perplexity", disable=not progress):
        chunk = picks[b0:b0 + batch_size]
        tbs = [translator.translate(blocks[i], random.Random(f"{seed}:{i}")) for i in chunk]
        nll_o = _token_nll(model, [blocks[i].input_ids for i in chunk], pad)
        nll_t = _token_nll(model, [tb.translated_ids for tb in tbs], pad)
        for i, tb, no, nt in zip(chunk, tbs, nll_o, nll_t, strict=True):
            tot["orig"] += float(no.sum())
            tot["tr"] += float(nt.sum())
            n_orig += len(no)
            n_tr += len(nt)
            n = len(blocks[i].input_ids)
            mapping, mask = np.asarray(tb.mapping[: n - 1]), np.asarray(tb.mask_reason[: n - 1])
            keep = np.nonzero((mapping >= 0) & (mask == 0) & (mapping < len(nt)))[0]
            tot["orig_kept"] += float(no[keep].sum())
            tot["tr_kept"] += float(nt[mapping[keep]].sum())
            n_kept += len(keep)
            n_anchor += tb.n_anchors
    ppl_o, ppl_t = math.exp(tot["orig"] / n_orig), math.exp(tot["tr"] / n_tr)
    return {"blocks": len(picks), "tokens": n_orig, "anchor_occurrences": n_anchor,
            "perplexity_original": round(ppl_o, 3), "perplexity_translated": round(ppl_t, 3),
            "ratio": round(ppl_t / ppl_o, 4),
            "ratio_kept": round(math.exp((tot["tr_kept"] - tot["orig_kept"]) / max(n_kept, 1)), 4)}
