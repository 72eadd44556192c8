"""Substitutes proposed by the base model: what a model that never heard of the concept would say in its place.

WHP's dictionary maps each anchored term to a generic thing *of the same kind that fits the text* (the paper asked
GPT-4). Offline, the base model can answer the same question for any concept: at an occurrence of a term, its
next-token distribution given the left context says which words fit there. Rules (cited by the tests):

P1. Contexts: up to ``occurrences`` occurrences per term, spread evenly over the corpus (first, last and evenly in
    between), each preceded by a space (so the term's first token is a word start) and cut to the last
    ``context_tokens`` tokens of its left context. Hard line wraps are joined first.
P2. Scores: the base model's next-token probabilities at the term's position, averaged over the term's contexts.
    The ``top_tokens`` best first tokens that start a word (a leading space then a letter) with the term's case,
    each at least 1/100 as probable as the best of them, are candidates, examined best first, ``round_size`` per term at a time, until ``want`` are accepted.
P3. Whole words: every candidate is continued greedily from the context that gave its first token the highest
    probability, until it holds as many whole words as the term (a word ends at a space or punctuation). So a
    first token the model only chose because it starts the target ("Cater" of "Caterpillar") is judged as the
    word it becomes, and refused by P5.
P4. Shape: same number of words as the term; a capitalised term gets candidates whose first and last words are
    capitalised, a lower-case term lower-case candidates; letters, apostrophes and hyphens only; no stop word or
    honorific as first or last word, and those two of at least 3 letters; every word a word of general English
    (wordfreq Zipf >= 2) or a known name, so a fragment the model ends early ("Qu" of "Quimby") is refused.
P5. Never the target: a candidate is refused when it equals the term, starts or ends like it ("Rabbits" for
    "Rabbit"), or holds a word of any anchored term or other target-specific candidate (``forbidden``).
P6. Person names (``person_names`` given): a person's substitutes must consist of known names (Faker's lists),
    of the person's gender when it is known (``genders``, with the ``female`` / ``male`` name lists); when none
    qualifies, the caller falls back to Faker.
P7. Deterministic: greedy decoding, ties broken by token id, no sampling.
P8. Fits the sentence (``nlp`` given: a spaCy pipeline with a tagger): put in place of the term in two of its
    contexts (left and right), the candidate's last word must be tagged a noun or proper noun of the same number
    as the term there ("Kings" does not replace "Knave", "English" does not replace "Hatter"). For a term that is
    an ordinary English noun used as a name (``noun_like``: "the Knave", "the Mouse") both are tagged in lower
    case, so an adjective ("Red") is not taken for a proper noun.
P9. Common heads: a multi-word term whose last word is an ordinary capitalised noun (``heads``: "Cheshire Cat",
    "March Hare") keeps it; the model proposes only the words before it ("Black Cat", "Brown Hare"). Rule P6 does
    not apply to ``noun_like`` terms: "the Mouse" wants another creature, not a person's name.
"""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch

from ...batching import pad_ids, positions

logger = logging.getLogger(__name__)

_WORD = re.compile(r"^[A-Za-z][A-Za-z'’\-]*$")
_MIN_SHARE = 0.01  # a candidate first token is at least this share of the best one's probability (P2)
_KNOWN_WORD_ZIPF = 2.0  # a substitute's words are words of general English at least this common (or names)


@dataclass
class Proposal:
    text: str
    score: float  # mean probability of the first token at the term's position


def _shape_ok(words: list[str], key_words: list[str], stop: set[str], titles: set[str]) -> bool:
    """Rule P4."""
    if len(words) != len(key_words) or not all(_WORD.match(w) for w in words):
        return False
    if any(a in w for w in words for a in "'’") and not any(a in k for k in key_words for a in "'’"):
        return False  # "Witch's" is not a creature
    for w in (words[0], words[-1]):
        if w.lower() in stop or w.lower().rstrip(".") in titles or len(w) < 3:
            return False
    if key_words[0][:1].isupper():
        return words[0][:1].isupper() and words[-1][:1].isupper() and not words[0].isupper()
    return all(w.islower() for w in words)


def _not_target(cand: str, key: str, forbidden: set[str]) -> bool:
    """Rule P5."""
    c, k = cand.lower().replace("’", "'"), key.lower().replace("’", "'")
    if c == k or c.startswith(k) or k.startswith(c):
        return False
    stem = k.rstrip("s")
    if len(stem) >= 3 and (c.startswith(stem) or c.rstrip("s") == stem):
        return False
    return not any(w.strip("'’") in forbidden for w in c.split(" "))


def find_contexts(texts: Sequence[str], keys: Iterable[str], occurrences: int) -> dict[str, list[tuple[str, str]]]:
    """(left, right) contexts of up to ``occurrences`` occurrences of each key, spread evenly over the corpus
    (rule P1): the text before the term (trailing whitespace removed) and the 80 characters after it."""
    from .kinds import mention_spans, spread_evenly

    joined, found = mention_spans(texts, keys, keep=lambda text, s: s > 0 and text[s - 1].isspace())
    out: dict[str, list[tuple[str, str]]] = {}
    for key, where in found.items():
        if not where:
            continue
        where = spread_evenly(where, occurrences)
        out[key] = [(joined[d][max(0, s - 600):s].rstrip(), joined[d][e:e + 80]) for d, s, e in where]
    return out


def _encode_left(tokenizer, contexts: list[str], context_tokens: int) -> list[list[int]]:
    enc = tokenizer(contexts, add_special_tokens=False)["input_ids"]
    bos = [tokenizer.bos_token_id] if getattr(tokenizer, "bos_token_id", None) is not None else []
    return [bos + list(ids[-context_tokens:]) for ids in enc]


def _left_pad(seqs: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ids, att = pad_ids(seqs, pad_id, left=True)
    pos = positions(att)
    return ids.to(device), att.to(device), pos.to(device)


def _last_logits(model, **kwargs):
    """Forward pass keeping only the last position's logits where the model allows it (saves the output layer
    on every other position)."""
    try:
        out = model(**kwargs, logits_to_keep=1)
    except TypeError:  # a model without logits_to_keep
        out = model(**kwargs)
    return out, out.logits[:, -1]


@torch.inference_mode()
def next_token_probs(model, tokenizer, seqs: list[list[int]], batch_size: int, progress: bool = False,
                     desc: str = "anchors: substitutes", keep: int = 1024) -> list[dict[int, float]]:
    """The ``keep`` most probable next tokens after each token sequence: one {token id: probability} per
    sequence (the rest of a large vocabulary is never held in memory; tokens outside count as probability 0)."""
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))  # similar lengths together: little padding
    out: list[dict[int, float]] = [{} for _ in seqs]
    for b in tqdm(range(0, len(order), batch_size), desc=desc, unit="batch", disable=not progress):
        chunk = order[b:b + batch_size]
        ids, att, pos = _left_pad([seqs[i] for i in chunk], pad, device)
        _out, logits = _last_logits(model, input_ids=ids, attention_mask=att, position_ids=pos, use_cache=False)
        top = torch.topk(torch.softmax(logits.float(), -1), min(keep, logits.size(-1)), dim=-1)
        values, indices = top.values.cpu().tolist(), top.indices.cpu().tolist()
        for j, i in enumerate(chunk):
            out[i] = dict(zip(indices[j], values[j], strict=True))
    return out


@torch.inference_mode()
def _greedy(model, tokenizer, seqs: list[list[int]], steps: int, batch_size: int) -> list[list[int]]:
    """Greedy continuation of each sequence by ``steps`` tokens (rule P7), with the model's KV cache when it
    returns one."""
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    # transformers 5 names the KV cache `cache`, earlier versions `past_key_values`
    cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    out = []
    for b in range(0, len(seqs), batch_size):
        cur = [list(s) for s in seqs[b:b + batch_size]]
        ids, att, pos = _left_pad(cur, pad, device)
        res, logits = _last_logits(model, input_ids=ids, attention_mask=att, position_ids=pos, use_cache=True)
        past = _cache_of(res)
        new: list[list[int]] = [[] for _ in cur]
        for step in range(steps):
            nxt = logits.float().argmax(-1)
            for j, t in enumerate(nxt.tolist()):
                new[j].append(t)
                cur[j].append(t)
            if step == steps - 1:
                break
            if past is None:  # no cache: run the whole sequences again
                ids, att, pos = _left_pad(cur, pad, device)
                res, logits = _last_logits(model, input_ids=ids, attention_mask=att, position_ids=pos,
                                           use_cache=False)
            else:
                att = torch.cat([att, torch.ones_like(att[:, :1])], -1)
                pos = pos[:, -1:] + 1
                res, logits = _last_logits(model, input_ids=nxt[:, None].to(device), attention_mask=att,
                                           position_ids=pos, use_cache=True, **{cache_arg: past})
                past = _cache_of(res)
        out += new
    return out


def _cache_of(res):
    cache = getattr(res, "cache", None)
    return cache if cache is not None else getattr(res, "past_key_values", None)


def _whole_words(text: str, n_words: int) -> str | None:
    """The first ``n_words`` whole words of ``text`` (which starts with a word), or None if the text ends
    inside the n-th word (rule P3)."""
    word = r"[A-Za-z'’\-]+"
    m = re.match(rf"\s*({word}(?: +{word}){{{n_words - 1}}})(?=$|[^A-Za-z'’\-])", text)
    if m is None:
        return None
    if not text[m.end():]:
        return None  # cannot tell whether the word is complete
    return m.group(1)


_NOUN_TAGS = {"NN", "NNS", "NNP", "NNPS"}


def _plural(tag: str) -> bool:
    return tag in ("NNS", "NNPS")


class _FitCheck:
    """Rule P8: tag the candidate in the term's own sentences."""

    def __init__(self, nlp, contexts: Mapping[str, list[tuple[str, str]]], per_key: int = 2,
                 lower: Iterable[str] = ()):
        self.nlp = nlp
        self.contexts = {k: v[:per_key] for k, v in contexts.items()}
        self.lower = set(lower)  # keys checked in lower case (P8)
        self._key_tags: dict[str, list[str]] = {}

    def _tags(self, items: list[tuple[str, str, str]]) -> list[str]:
        """Tag of the last token of ``middle`` in ``left + " " + middle + right`` for each (left, middle, right)."""
        texts, spans = [], []
        for left, middle, right in items:
            left = left[-160:]
            texts.append(f"{left} {middle}{right[:60]}")
            spans.append((len(left) + 1, len(left) + 1 + len(middle)))
        tags = []
        disable = [p for p in self.nlp.pipe_names if p == "ner"]
        with self.nlp.select_pipes(disable=disable):
            for doc, (a, b) in zip(self.nlp.pipe(texts, batch_size=64), spans, strict=True):
                toks = [t for t in doc if t.idx < b and t.idx + len(t.text) > a]
                tags.append(toks[-1].tag_ if toks else "")
        return tags

    def accept(self, pairs: list[tuple[str, str]]) -> list[bool]:
        """For each (key, candidate): does the candidate fit where the key stands?"""
        def case(key: str, text: str) -> str:
            return text.lower() if key in self.lower else text

        need = sorted({k for k, _c in pairs if k not in self._key_tags and k in self.contexts})
        items = [(lft, case(k, k), rgt) for k in need for lft, rgt in self.contexts[k]]
        tags = self._tags(items)
        i = 0
        for k in need:
            n = len(self.contexts[k])
            self._key_tags[k] = tags[i:i + n]
            i += n
        items, owners = [], []
        for j, (k, c) in enumerate(pairs):
            for lft, rgt in self.contexts.get(k, []):
                items.append((lft, case(k, c), rgt))
                owners.append(j)
        tags = self._tags(items) if items else []
        votes: list[list[bool]] = [[] for _ in pairs]
        counters = [0] * len(pairs)
        for j, tag in zip(owners, tags, strict=True):
            key_tag = self._key_tags[pairs[j][0]][counters[j]]
            counters[j] += 1
            if key_tag in _NOUN_TAGS:
                votes[j].append(tag in _NOUN_TAGS and _plural(tag) == _plural(key_tag))
            else:
                votes[j].append(tag == key_tag)
        return [bool(v) and sum(v) * 2 >= len(v) for v in votes]


def propose_substitutes(model, tokenizer, texts: Sequence[str], keys: Sequence[str], forbidden: Iterable[str],
                        stop_words: Iterable[str] = (), titles: Iterable[str] = (),
                        person_keys: Iterable[str] = (), person_names: Mapping[str, object] | set | None = None,
                        genders: Mapping[str, str] | None = None, female: Iterable[str] = (),
                        male: Iterable[str] = (), noun_like: Iterable[str] = (), heads: Mapping[str, str] | None = None,
                        nlp=None, occurrences: int = 8, context_tokens: int = 32,
                        top_tokens: int = 24, round_size: int = 8, want: int = 3, max_per_key: int = 6,
                        batch_size: int = 16, progress: bool = False) -> dict[str, list[Proposal]]:
    """Same-kind, in-context substitutes for ``keys`` proposed by ``model`` (rules P1-P9), best first.

    ``forbidden``: lower-case words that no substitute may contain (words of anchors and of other
    target-specific candidates). ``person_keys`` with ``person_names`` (lower-case known names) and ``genders``
    (key -> "f" / "m", with the ``female`` / ``male`` name lists): rule P6. ``nlp``: rule P8. ``noun_like``,
    ``heads``: rule P9."""
    from tqdm.auto import tqdm
    from wordfreq import zipf_frequency

    forbidden = {w.lower().replace("’", "'") for w in forbidden}
    stop, titles = {w.lower() for w in stop_words}, {w.lower() for w in titles}
    noun_like, heads = set(noun_like), dict(heads or {})
    person_keys, genders = set(person_keys) - noun_like, dict(genders or {})
    female, male = {w.lower() for w in female}, {w.lower() for w in male}
    contexts = find_contexts(texts, keys, occurrences)
    flat = [(k, left) for k in keys for left, _right in contexts.get(k, [])]
    if not flat:
        return {}
    seqs = _encode_left(tokenizer, [c for _k, c in flat], context_tokens)
    probs = next_token_probs(model, tokenizer, seqs, batch_size, progress=progress)
    rows_of: dict[str, list[int]] = {}
    for i, (k, _c) in enumerate(flat):
        rows_of.setdefault(k, []).append(i)
    fit = _FitCheck(nlp, contexts, lower=noun_like) if nlp is not None else None

    vocab_text: dict[int, str] = {}

    def token_text(tid: int) -> str:
        if tid not in vocab_text:
            vocab_text[tid] = tokenizer.decode([tid])
        return vocab_text[tid]

    queue: dict[str, list[tuple[int, float]]] = {}  # key -> first-token candidates (id, mean prob), best first
    for key in keys:
        rows = rows_of.get(key)
        if not rows:
            continue
        upper = key[:1].isupper()
        mean: dict[int, float] = {}
        for r in rows:
            for tid, p in probs[r].items():
                mean[tid] = mean.get(tid, 0.0) + p / len(rows)
        ranked = sorted(((p, tid) for tid, p in mean.items()), key=lambda x: (-x[0], x[1]))
        firsts: list[tuple[int, float]] = []
        for p, tid in ranked:
            if firsts and p < _MIN_SHARE * firsts[0][1]:
                break  # P2: far less likely than the best candidate
            piece = token_text(tid)
            if piece.startswith(" ") and piece[1:2].isalpha() and piece[1:2].isupper() == upper:
                firsts.append((tid, p))
                if len(firsts) >= top_tokens:
                    break
        queue[key] = firsts

    def acceptable(key: str, text: str) -> bool:
        words = text.split(" ")
        core = " ".join(words[:-1]) if key in heads else text  # a kept head is the key's own word (P9)
        if not _shape_ok(words, key.split(" "), stop, titles) or not _not_target(core, key, forbidden):
            return False
        if not all(zipf_frequency(w, "en") >= _KNOWN_WORD_ZIPF or (person_names is not None
                                                                   and w.lower() in person_names) for w in words):
            return False  # P4: a known word or name, not a fragment
        if key in person_keys and person_names is not None:
            if not all(w.lower() in person_names for w in words):
                return False  # P6
            g, first = genders.get(key), words[0].lower()
            if (g == "f" and first in male and first not in female) or (g == "m" and first in female
                                                                        and first not in male):
                return False
        return True

    accepted: dict[str, dict[str, float]] = {k: {} for k in queue}
    n_rounds = -(-top_tokens // round_size)
    for rnd in tqdm(range(n_rounds), desc="anchors: whole words", disable=not progress):
        jobs = []
        for key, firsts in queue.items():
            if len(accepted[key]) >= want:
                continue
            for tid, p in firsts[rnd * round_size:(rnd + 1) * round_size]:
                rows = rows_of[key]
                best_row = max(rows, key=lambda r, t=tid: (probs[r].get(t, 0.0), -r))
                jobs.append((key, tid, p, seqs[best_row][-12:] + [tid]))
        if not jobs:
            break
        steps = 2 * max(len(k.split(" ")) for k, *_x in jobs) + 1  # P3
        conts = _greedy(model, tokenizer, [s for *_x, s in jobs], steps, max(batch_size, 32))
        found = []
        for (key, tid, p, _seq), cont in zip(jobs, conts, strict=True):
            head = heads.get(key)
            text = _whole_words(tokenizer.decode([tid, *cont]), len(key.split(" ")) - (1 if head else 0))
            if text and head:
                text = f"{text} {head}"  # P9
            if text and acceptable(key, text):
                found.append((key, text, p))
        ok = fit.accept([(k, t) for k, t, _p in found]) if fit is not None and found else [True] * len(found)
        for (key, text, p), good in zip(found, ok, strict=True):
            if good:  # first tokens that complete to the same words add up
                accepted[key][text] = accepted[key].get(text, 0.0) + p

    out: dict[str, list[Proposal]] = {}
    for key, best in accepted.items():
        ranked = sorted(best.items(), key=lambda x: (-x[1], x[0]))[:max_per_key]
        if ranked:
            out[key] = [Proposal(t, s) for t, s in ranked]
    return out
