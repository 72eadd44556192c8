"""Stage 3, steps 1 and 5 of whp-method.md: translate a block's anchored terms and align the two token streams.

Every rule the labels stage relies on is stated here, numbered, so a reader finds each one in one place.

Matching (which text is an anchor)
----------------------------------
M1. Whole words only: a match may not be preceded or followed by a letter or digit (``_`` counts as a
    boundary, so Gutenberg italics ``_Holmes_`` match). "Holmes" matches in "Holmes’s", "Mr. Holmes" and
    "“Holmes”", never in "Holmesdale".
M2. Longest match first: at each position the longest key wins ("Sherlock Holmes" before "Holmes"), and
    matches never overlap (leftmost first, scanning left to right).
M3. Case: keys match as written. A key written in lower case (an ordinary-looking word such as "carbuncle")
    also matches with a capital first letter (sentence start) and the translation is capitalised to match; every
    key also matches in ALL CAPS (headings) and the translation is upper-cased.
M4. The words of a multi-word key may be separated by any run of spaces/tabs holding at most one line break,
    because corpora are hard-wrapped ("Irene\\nAdler"). When the translation has as many words as the key, the
    original separators are kept; otherwise its words are joined by single spaces.
M5. Straight and curly apostrophes inside a key are interchangeable ("O'Brien" matches "O’Brien").

Choosing translations
---------------------
C1. Each key that occurs in the block gets one translation, drawn with the caller's ``random.Random`` in order
    of first occurrence, and used for every occurrence in the block (``TranslatedBlock.chosen``).
C2. Linked keys stay consistent: when a multi-word key's longest proper word-prefix or word-suffix is itself a
    key ("Sherlock Holmes" / "Holmes"), that key is chosen first and the multi-word key's translation is drawn
    among those that start/end with it ("Holmes" -> "Hart" gives "Sherlock Holmes" -> "Owen Hart"). If no
    translation fits (a hand-edited dictionary), the draw is unconstrained.

Tokens and alignment
--------------------
T1. A token's *extended span* runs from the end of the previous token to its own end, so whitespace that a
    tokenizer folds into the next token (byte-level "ĠHolmes", SentencePiece "▁Holmes") belongs to it whether or
    not its offsets include it. An anchor occupies every token whose extended span overlaps its characters, widened
    so that no character is split between a kept token and a replaced one (byte-level BPE can split one character
    into several tokens). Occurrences whose token ranges share a token are merged into one *region*.
T2. Each region is re-tokenized alone: its text (leading whitespace, the translation, and any characters of its
    last token after the anchor, e.g. "," or "’s") is encoded behind a short left context and the context's tokens
    are dropped. The context (the two preceding tokens' text, nothing, a newline, or a restored leading space at a
    block start) is chosen by *calibration*: the first context under which the ORIGINAL region text re-encodes to
    exactly the original ids is used for the translated text. This reproduces each tokenizer's own whitespace
    conventions (prefix spaces, Metaspace prepending) without knowing them. Tokens outside regions are copied
    unchanged, so decoding the translated ids gives the decoded original with the substitutions made.
T3. ``mapping[i]`` (original position -> translated position) is exact for tokens outside regions; -1 for every
    token of a region except its LAST, which maps to the LAST token of the region's translation (both are followed
    by the text after the anchor, so their logits predict the same thing). The special prefix (BOS) maps to itself.
    The non-negative entries are strictly increasing.

Loss mask (``mask_reason``, for ORIGINAL position i, whose logits predict token i+1)
-----------------------------------------------------------------------------------
L0. 0 = keep the loss.
L1. 1 = inside an anchor: every token of a region except its last (its generic continuation would continue the
    translation, not the key). The last token keeps its loss (it predicts what follows the anchor).
L2. 2 = predicts the first token of a repeated anchor: the position just before a region whose first key already
    occurred earlier in this block. If that position is itself inside an earlier anchor it stays 1 (1 wins over
    2); if it is the last token of an adjacent anchor it becomes 2 (no loss).
L3. Anchors cut by the block boundary (blocks are cut at token boundaries, which can fall inside a word):
    - trailing fragment: the block's text ends, from a word start, with a proper prefix of a key
      ("... said Hol" or "... Sherlock" of "Sherlock Holmes"; after trailing whitespace only a prefix that stops
      between two words of a multi-word key counts, since the last word is then complete). It cannot be translated (the rest is in the next
      block); its text is kept, ALL its tokens get 1 and map to -1 except the last, which maps to itself (the last
      token of a block predicts nothing inside the block anyway). Rule L2 applies to the position before it when a
      key it may belong to occurred earlier in the block.
    - leading fragment: the block does not start the document, its first token does not carry a leading space,
      and its text starts with a proper suffix of a key ("mes said ..."). Kept as is; its tokens get 1 and -1
      except the last, which keeps its loss and maps to itself (like the last token of an anchor).
    A fragment that happens to be an ordinary word ("Baker" at the end of a block, where "Baker Street" is a
    key) is masked too; that only costs a few positions of loss.

Suppression (``suppress_from``)
-------------------------------
S1. When a key's translation is used for the first time in the block, the first tokens of the translation are
    suppressed in the base model's logits from the translated position of the LAST token of that first use
    (inclusive) to the end of the block: from there on the base model has seen the translation and would otherwise
    propose it again where the original text says the key.
S2. "The translation" means its first word that is not a word of the key: "Baker Street" -> "Hart Street"
    suppresses "Hart", never "Street"; "The Blue Carbuncle" -> "The Blue Lantern" suppresses "Lantern", never
    "The". A translation whose words all occur in the key suppresses nothing.
S3. "First tokens" are the token covering the word's first character in each tokenizer variant: after a space,
    with no space, after a newline, after an opening quote (“ and "), each for the word as written and with a
    capitalised first letter. Entries at the same position are merged; ids are sorted and unique.

Costs: matching is one precompiled regular expression (a character trie over all key variants) per block;
token positions come from ``numpy.searchsorted`` over the offsets; the mapping is built with one cumulative
sum. Python loops run per anchor occurrence, never per token.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..errors import AnchorError
from ..keylinks import key_links
from .matching import _WORD_CHAR, _WORD_END, _WORD_START, _WS, AnchorMatcher, _apply_case, _as_mapping, _cap

if TYPE_CHECKING:  # pragma: no cover
    from ..corpus import Block
    from .anchors.dictionary import AnchorDictionary

MASK_KEEP, MASK_INSIDE, MASK_REPEAT = 0, 1, 2


@dataclass
class TranslatedBlock:
    translated_ids: list[int]  # the translated block, same special-token prefix (BOS) as the original
    mapping: np.ndarray  # int64, len == len(original ids): translated position of each original token, or -1 (T3)
    mask_reason: np.ndarray  # int8, len == len(original ids): 0 keep, 1 inside an anchor, 2 predicts a repeat (L*)
    suppress_from: list[tuple[int, list[int]]]  # (translated position p, ids suppressed from p on, inclusive) (S*)
    chosen: dict[str, str]  # key -> translation used in this block
    translated_text: str
    n_anchors: int = 0  # anchor occurrences translated in this block
    fragments: list[tuple[int, int]] = field(default_factory=list)  # (first, last) original token of cut anchors
    uncalibrated_regions: int = 0  # regions whose re-tokenization could not be calibrated (T2); decoding is still exact
    anchor_spans: list[tuple[int, int]] = field(default_factory=list)  # (first, last) original token of each anchor region


@dataclass
class _Occurrence:
    start: int
    end: int
    key: str
    replacement: str | None  # None for a fragment (kept as is)
    kind: str = "anchor"  # anchor | lead | trail
    maybe_keys: tuple[str, ...] = ()  # for a trailing fragment: keys it may belong to


@dataclass
class _Region:
    first: int  # real-token index (without the special prefix)
    last: int
    occurrences: list[_Occurrence]

    @property
    def kind(self) -> str:
        return self.occurrences[0].kind


class Translator:
    """Translate blocks of one tokenizer with one anchor dictionary (see the module docstring for the rules)."""

    def __init__(self, dictionary: AnchorDictionary | Mapping[str, list[str]], tokenizer):
        if not getattr(tokenizer, "is_fast", False):
            raise AnchorError("translation needs a fast tokenizer (with offset mapping)")
        self.tokenizer = tokenizer
        self.table = _as_mapping(dictionary)
        self.matcher = AnchorMatcher(self.table)
        # Proper prefixes / suffixes of variants, for anchors cut by a block boundary (rule L3).
        self._prefixes: dict[str, set[str]] = {}
        self._suffixes: dict[str, set[str]] = {}
        for variant, (key, _case) in self.matcher.variants().items():
            for i in range(1, len(variant)):
                self._prefixes.setdefault(variant[:i], set()).add(key)
                self._suffixes.setdefault(variant[i:], set()).add(key)
        self._max_len = self.matcher.max_len
        self._links = {key: self._find_links(key) for key in self.table}
        self._first_token_cache: dict[str, list[int]] = {}
        self._space_marker = self._detect_space_marker()

    # ---- setup ---------------------------------------------------------------------------------------
    def _find_links(self, key: str) -> tuple[str | None, str | None]:
        """Longest proper word-prefix and word-suffix of ``key`` that are keys themselves (rule C2)."""
        return key_links(key, self.table)

    def _detect_space_marker(self) -> str | None:
        """The character a tokenizer uses for a folded leading space (Ġ, ▁), or None if it keeps no trace."""
        try:
            ids = self.tokenizer("x a", add_special_tokens=False)["input_ids"]
            piece = self.tokenizer.convert_ids_to_tokens(ids[-1])
        except Exception:  # some tokenizers cannot convert ids: treat as unknown
            return None
        if isinstance(piece, str) and piece.endswith("a") and len(piece) == 2:
            return piece[0]
        return None

    # ---- matching --------------------------------------------------------------------------------------
    def find(self, text: str) -> list[tuple[int, int, str, str]]:
        """All anchor matches in ``text``: (start, end, key, case) in order (rules M1-M5)."""
        return self.matcher.find(text)

    def _choose(self, key: str, rng: random.Random, chosen: dict[str, str]) -> str:
        if key in chosen:
            return chosen[key]
        prefix, suffix = self._links[key]
        options = self.table[key]
        if prefix is not None:
            p = self._choose(prefix, rng, chosen) + " "
            options = [t for t in options if t.startswith(p)] or options
        if suffix is not None:
            s = " " + self._choose(suffix, rng, chosen)
            options = [t for t in options if t.endswith(s)] or options
        chosen[key] = rng.choice(options)
        return chosen[key]

    @staticmethod
    def _render(translation: str, case: str, matched: str, key: str) -> str:
        text = _apply_case(translation, case)
        seps = re.findall(r"\s+", matched)
        words = text.split(" ")
        if seps and len(words) == len(key.split(" ")) and len(seps) == len(words) - 1:  # rule M4
            text = words[0] + "".join(sep + w for sep, w in zip(seps, words[1:], strict=True))
        return text

    def _fragments(self, block: Block, text: str, matches) -> list[_Occurrence]:
        """Anchors cut by the block boundary (rule L3)."""
        out = []
        n = len(text)
        if not n or not self._max_len:
            return out
        # Trailing fragment: the tail from some word start is a proper prefix of a key. When the text ends with
        # whitespace (offsets that exclude the space folded into the next block's first token), the last word is
        # complete, so only a multi-word key can continue: the tail plus a space must be a prefix.
        n_eff = len(text.rstrip())
        if n_eff and re.match(_WORD_CHAR, text[n_eff - 1]):
            gap = " " if n_eff < n else ""
            lo = max(matches[-1][1] if matches else 0, n_eff - self._max_len)
            for m in _WORD_START.finditer(text, lo, n_eff):  # earliest start first: the longest fragment
                keys = self._prefixes.get(_WS.sub(" ", text[m.start():n_eff]) + gap)
                if keys:
                    out.append(_Occurrence(m.start(), n, "", None, "trail", tuple(sorted(keys))))
                    break
        # Leading fragment: mid-document block whose first token carries no leading space.
        hi = min(matches[0][0] if matches else n, self._max_len)
        if block.char_start > 0 and re.match(_WORD_CHAR, text[0]) and not self._first_token_has_space(block):
            best = None
            for m in _WORD_END.finditer(text):
                if m.end() > hi:
                    break
                if _WS.sub(" ", text[:m.end()]) in self._suffixes:
                    best = m.end()  # keep the longest
            if best is not None:
                out.insert(0, _Occurrence(0, best, "", None, "lead"))
        return out

    def _first_token_has_space(self, block: Block) -> bool:
        if block.n_prefix >= len(block.input_ids):
            return True
        if self._space_marker is None:
            return False  # unknown: treat as possibly cut (masking a fragment is harmless)
        piece = self.tokenizer.convert_ids_to_tokens(block.input_ids[block.n_prefix])
        return isinstance(piece, str) and piece.startswith((self._space_marker, " "))

    # ---- tokens ----------------------------------------------------------------------------------------
    def _encode_after(self, enc_ids, enc_offs, cut: int) -> list[int] | None:
        """Ids of the tokens after a context of ``cut`` characters, or None if a token straddles the cut."""
        if cut == 0:
            return list(enc_ids)
        k = 0
        while k < len(enc_ids) and enc_offs[k][1] <= cut:
            k += 1
        if k == 0 or any(a < cut for a, _b in enc_offs[k:]):
            return None
        return list(enc_ids[k:])

    def _encode(self, pairs: list[tuple[str, str]]) -> list[list[int] | None]:
        if not pairs:
            return []
        enc = self.tokenizer([c + b for c, b in pairs], add_special_tokens=False, return_offsets_mapping=True)
        return [self._encode_after(ids, offs, len(c))
                for (c, _b), ids, offs in zip(pairs, enc["input_ids"], enc["offset_mapping"], strict=True)]

    def _retokenize(self, jobs: list[tuple[list[tuple[str, str]], str, str, list[int]]]) -> tuple[list[list[int]], int]:
        """For each region: (candidate (context, prefix) pairs, original text, new text, original ids) ->
        new ids, by calibration (rule T2). Candidates are tried in rounds, each round one batched call."""
        results: list[list[int] | None] = [None] * len(jobs)
        pending = list(range(len(jobs)))
        rnd = 0
        while pending:
            trial = [j for j in pending if rnd < len(jobs[j][0])]
            if not trial:
                break
            pairs = []
            for j in trial:
                ctx, pfx = jobs[j][0][rnd]
                pairs += [(ctx, pfx + jobs[j][1]), (ctx, pfx + jobs[j][2])]
            encoded = self._encode(pairs)
            for n, j in enumerate(trial):
                orig, new = encoded[2 * n], encoded[2 * n + 1]
                if orig == jobs[j][3] and new:
                    results[j] = new
            pending = [j for j in pending if results[j] is None]
            rnd += 1
        uncalibrated = 0
        for j in pending:  # no context reproduced the original ids: encode the new text alone
            uncalibrated += 1
            ids = self.tokenizer(jobs[j][2], add_special_tokens=False)["input_ids"]
            results[j] = list(ids) if ids else list(jobs[j][3])
        return results, uncalibrated  # type: ignore[return-value]

    def first_token_ids(self, word: str) -> list[int]:
        """Ids of the token covering ``word``'s first character in each tokenizer variant (rule S3)."""
        if word in self._first_token_cache:
            return self._first_token_cache[word]
        forms = {word, _cap(word)}
        pairs = [(pre, form) for form in sorted(forms) for pre in (" ", "", "\n", "“", '"')]
        enc = self.tokenizer([p + f for p, f in pairs], add_special_tokens=False, return_offsets_mapping=True)
        special = set(getattr(self.tokenizer, "all_special_ids", []) or [])
        ids = set()
        for (pre, _f), tids, offs in zip(pairs, enc["input_ids"], enc["offset_mapping"], strict=True):
            at = len(pre)  # the word's first character
            for tid, (a, b) in zip(tids, offs, strict=True):
                if b > at and a <= at and tid not in special:
                    ids.add(int(tid))
                    break
        self._first_token_cache[word] = sorted(ids)
        return self._first_token_cache[word]

    def _suppression_word(self, key: str, translation: str) -> str | None:
        key_words = {w.lower() for w in key.split(" ")}
        return next((w for w in translation.split(" ") if w.lower() not in key_words), None)  # rule S2

    # ---- the translation -------------------------------------------------------------------------------
    def _substitute(self, text: str, matches, rng: random.Random) -> tuple[str, list[_Occurrence], dict[str, str]]:
        """The text with every match replaced by its key's translation (rules C1, C2, M3, M4)."""
        chosen_all: dict[str, str] = {}
        occurrences: list[_Occurrence] = []
        pieces, last_end = [], 0
        for s, e, key, case in matches:
            translation = self._choose(key, rng, chosen_all)
            rendered = self._render(translation, case, text[s:e], key)
            occurrences.append(_Occurrence(s, e, key, rendered))
            pieces += [text[last_end:s], rendered]
            last_end = e
        return "".join(pieces) + text[last_end:], occurrences, chosen_all

    def translate_text(self, text: str, rng: random.Random) -> str:
        """Plain text with its anchored terms replaced, by the rules a block follows (no tokens, no alignment)."""
        return self._substitute(text, self.find(text), rng)[0]

    def translate(self, block: Block, rng: random.Random) -> TranslatedBlock:
        ids = list(block.input_ids)
        n_total, n_pre = len(ids), block.n_prefix
        text = block.text
        matches = self.find(text)
        translated_text, occurrences, chosen_all = self._substitute(text, matches, rng)
        chosen = {o.key: chosen_all[o.key] for o in occurrences}
        frags = self._fragments(block, text, matches) if n_total > n_pre else []
        occurrences = sorted(occurrences + frags, key=lambda o: o.start)

        mapping = np.arange(n_total, dtype=np.int64)
        mask = np.zeros(n_total, dtype=np.int8)
        if not occurrences:
            return TranslatedBlock(ids, mapping, mask, [], chosen, translated_text)

        # Token ranges of occurrences (rule T1), with real-token indices (prefix excluded).
        offs = np.asarray(block.offsets[n_pre:], dtype=np.int64).reshape(-1, 2)
        starts = offs[:, 0]
        ends = np.maximum.accumulate(offs[:, 1])
        n_real = len(ends)
        occ_s = np.array([o.start for o in occurrences])
        occ_e = np.array([o.end for o in occurrences])
        firsts = np.minimum(np.searchsorted(ends, occ_s, side="right"), n_real - 1)
        lasts = np.minimum(np.searchsorted(ends, occ_e, side="left"), n_real - 1)
        regions: list[_Region] = []
        for occ, f, last in zip(occurrences, firsts.tolist(), lasts.tolist(), strict=True):
            while f > 0 and starts[f] < ends[f - 1]:  # never split a character (rule T1)
                f -= 1
            while last + 1 < n_real and starts[last + 1] < ends[last]:
                last += 1
            if regions and f <= regions[-1].last:  # shares a token with the previous region
                prev = regions[-1]
                if occ.kind == "anchor" and prev.kind == "anchor":  # merge the two anchors
                    prev.last = max(prev.last, last)
                    prev.occurrences.append(occ)
                elif occ.kind == "anchor":  # a leading fragment touching an anchor: the anchor wins
                    regions[-1] = _Region(min(prev.first, f), last, [occ])
                # else: a trailing fragment touching an anchor is covered by the anchor
            else:
                regions.append(_Region(f, last, [occ]))

        # New ids for translated regions (rule T2), in one batched round per calibration candidate.
        def ext_start(j: int) -> int:
            return int(ends[j - 1]) if j > 0 else 0

        jobs, job_regions = [], []
        for r in regions:
            if r.kind != "anchor":
                continue
            c0, c1 = ext_start(r.first), int(ends[r.last])
            new_text, pos = [], c0
            for o in r.occurrences:
                new_text += [text[pos:o.start], o.replacement]
                pos = o.end
            new_text.append(text[pos:c1])
            if r.first > 0:
                ctx = text[ext_start(max(r.first - 2, 0)):c0]
                cands = [(ctx, ""), ("", ""), ("\n", ""), ("", " ")]
            else:
                cands = [("", ""), ("", " "), ("\n", ""), ("\n", " ")]
            jobs.append((cands, text[c0:c1], "".join(new_text), ids[n_pre + r.first:n_pre + r.last + 1]))
            job_regions.append(r)
        new_ids_list, uncalibrated = self._retokenize(jobs)
        new_ids_of = {id(r): nid for r, nid in zip(job_regions, new_ids_list, strict=True)}

        # Assemble ids, mapping (rule T3) and masks (rules L1-L3), one step per region.
        out: list[int] = ids[:n_pre]
        delta = np.zeros(n_total + 1, dtype=np.int64)
        seen: set[str] = set()
        first_use: dict[str, tuple[int, str]] = {}  # key -> (region index, translation)
        last_pos: list[tuple[int, int]] = []  # per region: (original last position, translated last position)
        cursor = n_pre
        fragments, anchor_spans = [], []
        n_anchors = 0
        for ri, r in enumerate(regions):
            f, last = n_pre + r.first, n_pre + r.last
            new = new_ids_of.get(id(r), ids[f:last + 1])
            out += ids[cursor:f]
            t_first = len(out)
            out += new
            cursor = last + 1
            delta[last + 1] += len(new) - (last - f + 1)
            last_pos.append((last, t_first + len(new) - 1))
            mask[f:last] = MASK_INSIDE
            if r.kind == "trail":
                mask[last] = MASK_INSIDE
            if r.kind != "anchor":
                fragments.append((f, last))
            else:
                anchor_spans.append((f, last))
            lead_keys = [r.occurrences[0].key] if r.kind == "anchor" else list(r.occurrences[0].maybe_keys)
            if f - 1 >= 0 and mask[f - 1] != MASK_INSIDE and any(k in seen for k in lead_keys):
                mask[f - 1] = MASK_REPEAT  # rule L2
            for o in r.occurrences:
                if o.kind == "anchor":
                    n_anchors += 1
                    seen.add(o.key)
                    first_use.setdefault(o.key, (ri, chosen[o.key]))
        out += ids[cursor:]
        mapping = mapping + np.cumsum(delta)[:n_total]
        for r, (last, t_last) in zip(regions, last_pos, strict=True):
            mapping[n_pre + r.first:last] = -1
            mapping[last] = t_last

        # Suppression (rules S1-S3).
        by_pos: dict[int, set[int]] = {}
        for key, (ri, translation) in first_use.items():
            word = self._suppression_word(key, translation)
            if word is None:
                continue
            by_pos.setdefault(last_pos[ri][1], set()).update(self.first_token_ids(word))
        suppress = [(p, sorted(v)) for p, v in sorted(by_pos.items()) if v]
        return TranslatedBlock(out, mapping, mask, suppress, chosen, translated_text, n_anchors, fragments,
                               uncalibrated, anchor_spans)
