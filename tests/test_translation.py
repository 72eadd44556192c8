"""Translation with alignment (whp-method.md stage 3, steps 1 and 5), on real tokenizers of four kinds:
SmolLM2 (byte-level BPE, offsets with the leading space), Gemma-3 (SentencePiece-style BPE with a BOS), a Unigram
with Metaspace prepending (Llama-2 style, BOS, decoder strips the first space) and a byte-level BPE whose offsets
exclude the leading space — the last two trained here on a bit of the corpus."""

from __future__ import annotations

import random
import re
import time

import numpy as np
import pytest

from llm_unlearn.corpus import Block, Document, make_blocks
from llm_unlearn.errors import AnchorError
from llm_unlearn.whp.translation import MASK_INSIDE, MASK_KEEP, MASK_REPEAT, Translator

TOKENIZERS = ["smol", "gemma", "unigram", "bytelevel_trimmed"]

TABLE = {
    "Holmes": ["Turner", "Hart"],
    "Sherlock Holmes": ["Owen Turner", "Paul Hart"],
    "Watson": ["Baker"],
    "Windibank": ["Parry"],
    "Irene": ["Megan"],
    "Adler": ["Cole"],
    "carbuncle": ["lantern"],
    "Baker Street": ["Hart Street"],
    "Hosmer Angel": ["Victor Lumley"],
}


# ---- tokenizers -------------------------------------------------------------------------------------------
def _train_text(sherlock_text: str) -> list[str]:
    return sherlock_text[:80000].split("\n\n")


@pytest.fixture(scope="module")
def unigram_tokenizer(sherlock_text):
    """Unigram + Metaspace(prepend first) with a BOS: the Llama-2 / T5 family, trained in seconds."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.Unigram())
    tk.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tk.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    trainer = trainers.UnigramTrainer(vocab_size=900, special_tokens=["<s>", "</s>", "<unk>"], unk_token="<unk>",
                                      initial_alphabet=list("’“”—_'\""))
    tk.train_from_iterator(_train_text(sherlock_text), trainer)
    tk.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    assert tok("Holmes")["input_ids"][0] == tok.bos_token_id
    return tok


@pytest.fixture(scope="module")
def bytelevel_trimmed_tokenizer(sherlock_text):
    """Byte-level BPE whose offsets EXCLUDE the folded leading space (trim_offsets=True)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True)
    tk.decoder = decoders.ByteLevel()
    tk.post_processor = processors.ByteLevel(trim_offsets=True)
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(_train_text(sherlock_text), trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|endoftext|>")
    enc = tok("said it", add_special_tokens=False, return_offsets_mapping=True)
    assert enc["offset_mapping"][-1] == (5, 7)  # the space folded into "Ġit" is trimmed from its offsets
    return tok


@pytest.fixture(params=TOKENIZERS)
def tok(request):
    return request.getfixturevalue(f"{request.param}_tokenizer")


# ---- an independent reference for the expected text -------------------------------------------------------
def reference_substitute(text: str, chosen: dict[str, str]) -> str:
    """Substitute chosen translations the simple way (one regex per case form, longest key first)."""
    forms = []
    for key, tr in chosen.items():
        forms.append((key, tr))
        forms.append((key.upper(), tr.upper()))
        if key[0].islower():
            forms.append((key[0].upper() + key[1:], tr[0].upper() + tr[1:]))
    forms.sort(key=lambda f: -len(f[0]))
    table = {re.sub(r"\s+", " ", k): v for k, v in forms}
    alternation = "|".join(re.escape(k).replace(r"\ ", r"(?:[^\S\n]*\n[^\S\n]*|[^\S\n]+)") for k, _ in forms)
    if not alternation:
        return text

    def repl(m):
        tr = table[re.sub(r"\s+", " ", m.group(0))]
        seps = re.findall(r"\s+", m.group(0))
        words = tr.split(" ")
        if seps and len(seps) == len(words) - 1:
            return words[0] + "".join(s + w for s, w in zip(seps, words[1:], strict=True))
        return tr

    return re.sub(rf"(?<![^\W_])(?:{alternation})(?![^\W_])", repl, text)


def decode(tokenizer, ids) -> str:
    return tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)


def check_invariants(tokenizer, block: Block, tb, prefix_check: bool = True) -> None:
    """What must hold for any block: lengths, prefix, text, decoding, monotonic mapping, mask/mapping agreement,
    kept tokens unchanged, and (optionally) equal decoded text up to every mapped position."""
    n = len(block.input_ids)
    ids = list(block.input_ids)
    assert tb.mapping.dtype == np.int64 and tb.mask_reason.dtype == np.int8
    assert len(tb.mapping) == n and len(tb.mask_reason) == n
    assert tb.translated_ids[: block.n_prefix] == ids[: block.n_prefix]
    assert tb.translated_text == reference_substitute(block.text, tb.chosen)
    assert decode(tokenizer, tb.translated_ids) == reference_substitute(decode(tokenizer, ids), tb.chosen)
    mapped = tb.mapping[tb.mapping >= 0]
    assert np.all(np.diff(mapped) > 0), "mapping must be strictly increasing"
    assert mapped.max(initial=-1) < len(tb.translated_ids)
    assert np.all(tb.mapping[: block.n_prefix] == np.arange(block.n_prefix))
    trail_last = {last for first, last in tb.fragments if tb.mask_reason[last] == MASK_INSIDE}
    for i in range(n):
        if tb.mapping[i] < 0:
            assert tb.mask_reason[i] == MASK_INSIDE, f"unmapped position {i} must be masked"
        elif tb.mask_reason[i] == MASK_INSIDE:
            assert i in trail_last
    # Tokens outside anchors are copied: only the last token of an anchor may map to a different token.
    changed = sum(1 for i in range(n) if tb.mapping[i] >= 0 and tb.translated_ids[tb.mapping[i]] != ids[i])
    assert changed <= tb.n_anchors
    if prefix_check:
        for i in range(n):
            end = block.offsets[i][1]
            mid_word = 0 < end < len(block.text) and block.text[end - 1].isalnum() and block.text[end].isalnum()
            if tb.mapping[i] >= 0 and not mid_word:  # a prefix cut mid-word could end in a different "word"
                before = reference_substitute(decode(tokenizer, ids[: i + 1]), tb.chosen)
                after = decode(tokenizer, tb.translated_ids[: tb.mapping[i] + 1])
                assert after == before, f"text up to original position {i} and translated {tb.mapping[i]} differ"
    for p, sup in tb.suppress_from:
        assert 0 <= p < len(tb.translated_ids) and sup == sorted(set(sup))
    # anchor_spans (labels rule R5): translated regions in order, each masked inside and mapped at its last token
    assert len(tb.anchor_spans) <= tb.n_anchors and tb.anchor_spans == sorted(tb.anchor_spans)
    for first, last in tb.anchor_spans:
        assert all(tb.mapping[first:last] == -1) and tb.mapping[last] >= 0


def anchor_tokens(block: Block, start: int, end: int) -> list[int]:
    """Original positions of the tokens of the anchor at text[start:end] (extended spans, rule T1),
    computed the slow way."""
    out = []
    prev_end = 0
    for i in range(block.n_prefix, len(block.input_ids)):
        a, b = block.offsets[i]
        if b > start and prev_end < end:
            out.append(i)
        prev_end = max(prev_end, b)
    return out


def one_block(tokenizer, text: str) -> Block:
    blocks = make_blocks([Document("t", text)], tokenizer, block_size=10_000)
    assert len(blocks) == 1
    return blocks[0]


def translate(tokenizer, text, table=TABLE, seed=0):
    block = one_block(tokenizer, text)
    tb = Translator(table, tokenizer).translate(block, random.Random(seed))
    return block, tb


# ---- tests --------------------------------------------------------------------------------------------------
def test_repeated_anchor_and_suppression_positions(tok):
    text = "Then Holmes met Watson near the door. Later Holmes left with Watson."
    block, tb = translate(tok, text, {"Holmes": ["Turner"], "Watson": ["Baker"]})
    check_invariants(tok, block, tb)
    assert tb.chosen == {"Holmes": "Turner", "Watson": "Baker"}
    assert tb.translated_text == "Then Turner met Baker near the door. Later Turner left with Baker."
    h1, h2 = [m.start() for m in re.finditer("Holmes", text)]
    w1, w2 = [m.start() for m in re.finditer("Watson", text)]
    regions = {name: anchor_tokens(block, s, s + 6) for name, s in
               (("h1", h1), ("h2", h2), ("w1", w1), ("w2", w2))}
    expected = np.zeros(len(block.input_ids), dtype=np.int8)
    for toks in regions.values():
        expected[toks[:-1]] = MASK_INSIDE
    expected[regions["h2"][0] - 1] = MASK_REPEAT
    expected[regions["w2"][0] - 1] = MASK_REPEAT
    assert tb.mask_reason.tolist() == expected.tolist()
    assert tb.anchor_spans == sorted((t[0], t[-1]) for t in regions.values())
    # Suppression starts at the translated position of the last token of each translation's first use.
    starts = dict(tb.suppress_from)
    p_h = int(tb.mapping[regions["h1"][-1]])
    p_w = int(tb.mapping[regions["w1"][-1]])
    assert sorted(starts) == sorted({p_h, p_w})
    turner = set(starts[p_h])
    for variant in (" Turner", "Turner", "\nTurner"):
        enc = tok(variant, add_special_tokens=False, return_offsets_mapping=True)
        k = next(j for j, (a, b) in enumerate(enc["offset_mapping"]) if b > (1 if variant[0] in " \n" else 0))
        assert enc["input_ids"][k] in turner, f"first token of {variant!r} not suppressed"
    # The translated position of the first use's last token decodes to text ending with the translation.
    assert decode(tok, tb.translated_ids[: p_h + 1]).endswith("Turner")


def test_multi_token_anchor_inside_positions(tok):
    text = "A letter from Windibank arrived, and Windibank’s clerk waited."
    block, tb = translate(tok, text)
    check_invariants(tok, block, tb)
    assert tb.translated_text == "A letter from Parry arrived, and Parry’s clerk waited."
    s = text.index("Windibank")
    toks = anchor_tokens(block, s, s + len("Windibank"))
    assert len(toks) >= 2, "Windibank should be several tokens in every tokenizer here"
    assert all(tb.mapping[t] == -1 for t in toks[:-1])
    assert all(tb.mask_reason[t] == MASK_INSIDE for t in toks[:-1])
    last = toks[-1]
    assert tb.mask_reason[last] == MASK_KEEP
    assert decode(tok, tb.translated_ids[: tb.mapping[last] + 1]).endswith("Parry")
    assert tb.mapping[last + 1] == tb.mapping[last] + 1 or tb.mapping[last + 1] > tb.mapping[last]


def test_longest_match_linking_and_whole_words(tok):
    text = "To Sherlock Holmes she wrote; Holmes read it in Holmesdale, by the _Holmes_ lamp."
    block, tb = translate(tok, text)
    check_invariants(tok, block, tb)
    holmes = tb.chosen["Holmes"]
    assert tb.chosen["Sherlock Holmes"].endswith(" " + holmes)  # rule C2
    assert "Holmesdale" in tb.translated_text and f"_{holmes}_" in tb.translated_text
    assert tb.translated_text.startswith(f"To {tb.chosen['Sherlock Holmes']} she wrote; {holmes} read")
    assert tb.n_anchors == 3


def test_adjacent_anchors_and_line_wrap(tok):
    # "Irene" and "Adler" are separate keys: two adjacent regions; the second Adler repeats the first.
    text = "Adler came first. Then Irene Adler smiled at Hosmer\nAngel, and Irene\nAdler left."
    block, tb = translate(tok, text)
    check_invariants(tok, block, tb)
    assert tb.translated_text == "Cole came first. Then Megan Cole smiled at Victor\nLumley, and Megan\nCole left."
    s_irene = text.index("Irene")
    s_adler2 = text.index("Adler", s_irene)
    irene = anchor_tokens(block, s_irene, s_irene + 5)
    adler2 = anchor_tokens(block, s_adler2, s_adler2 + 5)
    assert irene[-1] + 1 == adler2[0], "the regions are adjacent"
    # The last token of "Irene" predicts the first token of a repeated anchor: no loss (rule L2).
    assert tb.mask_reason[irene[-1]] == MASK_REPEAT
    assert 0 <= tb.mapping[irene[-1]] < tb.mapping[adler2[-1]]
    assert all(tb.mapping[t] == -1 for t in adler2[:-1])
    # Across a line break the position before the repeated "Adler" (the newline or "Irene") gets 2 as well.
    s_adler3 = text.index("Adler", s_adler2 + 1)
    adler3 = anchor_tokens(block, s_adler3, s_adler3 + 5)
    assert tb.mask_reason[adler3[0] - 1] == MASK_REPEAT


def test_possessives_and_case_variants(tok):
    text = "Holmes’s hat, Holmes's coat and Holmes’ pipe. Carbuncle! The carbuncle. THE CARBUNCLE AND HOLMES."
    block, tb = translate(tok, text, {"Holmes": ["Turner"], "carbuncle": ["lantern"]})
    check_invariants(tok, block, tb)
    assert tb.translated_text == ("Turner’s hat, Turner's coat and Turner’ pipe. Lantern! The lantern. "
                                  "THE LANTERN AND TURNER.")
    # Case variants of one key are the same key: the later ones are repeats.
    assert int(np.sum(tb.mask_reason == MASK_REPEAT)) == 5


def test_anchor_at_block_start(tok):
    block, tb = translate(tok, "Holmes laughed. Watson did not.")
    check_invariants(tok, block, tb)
    first = anchor_tokens(block, 0, 6)
    assert first[0] == block.n_prefix
    assert tb.translated_text.startswith("Turner laughed") or tb.translated_text.startswith("Hart laughed")
    assert tb.mask_reason[: block.n_prefix].tolist() == [0] * block.n_prefix


def test_blocks_cut_inside_and_between_anchors(tok):
    """An anchor cut by a block boundary: the trailing part of block k and the leading part of block k+1 are
    masked (rule L3); anchors starting a mid-document block are translated normally."""
    text = ("It was signed by Windibank and delivered to Baker Street at noon, where Sherlock Holmes read it "
            "twice; then Windibank wrote again.")
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    n_bos = len(tok("a")["input_ids"]) - len(tok("a", add_special_tokens=False)["input_ids"])
    offs = enc["offset_mapping"]
    s = text.index("Windibank")
    inside = [i for i, (a, b) in enumerate(offs) if b > s and a < s + 9]
    assert len(inside) >= 2
    cut = inside[1]  # the first block ends after the first token of "Windibank"
    blocks = make_blocks([Document("t", text)], tok, block_size=cut + n_bos)
    assert blocks[0].text.endswith(text[offs[inside[0]][0]:offs[inside[0]][1]].strip())
    translator = Translator(TABLE, tok)
    rng = random.Random(3)
    results = [translator.translate(b, rng) for b in blocks]
    for b, tb in zip(blocks, results, strict=True):
        check_invariants(tok, b, tb)
    b0, t0 = blocks[0], results[0]
    assert t0.fragments, "the cut-off start of Windibank must be a trailing fragment"
    f, last = t0.fragments[-1]
    assert last == len(b0.input_ids) - 1
    assert all(t0.mask_reason[f:last + 1] == MASK_INSIDE)
    assert "Parry" not in t0.translated_text and t0.translated_text == b0.text
    # The next block starts inside the word: a leading fragment if its first token carries no space.
    b1, t1 = blocks[1], results[1]
    piece = tok.convert_ids_to_tokens(b1.input_ids[b1.n_prefix])
    if not piece.startswith(("Ġ", "▁", " ")):
        assert t1.fragments and t1.fragments[0][0] == b1.n_prefix
        f1, l1 = t1.fragments[0]
        assert all(t1.mask_reason[f1:l1] == MASK_INSIDE) and t1.mask_reason[l1] == MASK_KEEP
    # Cut between the words of a multi-word key: "... Sherlock | Holmes read"
    s2 = text.index("Sherlock")
    k = next(i for i, (a, b) in enumerate(offs) if b >= s2 + len("Sherlock"))
    blocks = make_blocks([Document("t", text)], tok, block_size=k + 1 + n_bos)
    tbs = [translator.translate(b, random.Random(0)) for b in blocks]
    for b, tb in zip(blocks, tbs, strict=True):
        check_invariants(tok, b, tb, prefix_check=False)
    assert blocks[0].text.rstrip().endswith("Sherlock")
    assert tbs[0].fragments and all(tbs[0].mask_reason[tbs[0].fragments[-1][0]:] == MASK_INSIDE)
    assert "Holmes" in tbs[1].chosen  # the next block starts with " Holmes": a full anchor


def test_translation_is_random_per_block_and_consistent_within(tok):
    text = "Holmes and Holmes and Holmes."
    seen = set()
    for seed in range(12):
        _, tb = translate(tok, text, {"Holmes": ["Turner", "Hart", "Moss"]}, seed=seed)
        words = re.findall(r"[A-Z][a-z]+", tb.translated_text)
        assert len(set(words)) == 1 and words[0] == tb.chosen["Holmes"]
        seen.add(words[0])
    assert len(seen) >= 2
    a = translate(tok, text, {"Holmes": ["Turner", "Hart", "Moss"]}, seed=5)[1]
    b = translate(tok, text, {"Holmes": ["Turner", "Hart", "Moss"]}, seed=5)[1]
    assert a.translated_ids == b.translated_ids


def test_suppression_skips_words_shared_with_the_key(tok):
    block, tb = translate(tok, "He lived at Baker Street for years.", {"Baker Street": ["Hart Street"]})
    check_invariants(tok, block, tb)
    (_, ids), = tb.suppress_from
    translator = Translator({"Baker Street": ["Hart Street"]}, tok)
    assert ids == translator.first_token_ids("Hart")
    street = set(translator.first_token_ids("Street"))
    assert not street & set(ids) or street <= set(translator.first_token_ids("Hart"))


def test_no_anchor_is_identity(tok):
    block, tb = translate(tok, "Nothing to see in this plain sentence.")
    assert tb.translated_ids == block.input_ids
    assert tb.mapping.tolist() == list(range(len(block.input_ids)))
    assert not tb.mask_reason.any() and tb.suppress_from == [] and tb.chosen == {}


def test_merged_region_when_one_token_covers_two_anchors():
    """A word-level tokenizer whose single token spans two anchors: the occurrences merge into one region."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "said": 1, "Holmes/Watson": 2, "then": 3, "Turner/Baker": 4, "Turner": 5, "Baker": 6}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]")
    block = one_block(tok, "said Holmes/Watson then Holmes/Watson")
    tb = Translator({"Holmes": ["Turner"], "Watson": ["Baker"]}, tok).translate(block, random.Random(0))
    assert tb.translated_text == "said Turner/Baker then Turner/Baker"
    assert tb.translated_ids == [1, 4, 3, 4]
    assert tb.mapping.tolist() == [0, 1, 2, 3]
    assert tb.mask_reason.tolist() == [0, 0, MASK_REPEAT, 0]
    assert [p for p, _ in tb.suppress_from] == [1]


def test_bad_inputs():
    class Slow:
        is_fast = False

    with pytest.raises(AnchorError, match="fast tokenizer"):
        Translator({"Holmes": ["Turner"]}, Slow())


@pytest.mark.parametrize("bad", [{"Holmes": []}, {"Holmes": [""]}, {"": ["x"]}, {"Holmes": [3]}])
def test_bad_tables(smol_tokenizer, bad):
    with pytest.raises(AnchorError):
        Translator(bad, smol_tokenizer)


def test_whole_sherlock_corpus_translates_fast_and_exactly(smol_tokenizer, gemma_tokenizer, sherlock_text):
    """Every 512-token block of the corpus: exact decoding and invariants (without the quadratic prefix check),
    and the time per block stays small (no per-token Python loops)."""
    table = {
        "Holmes": ["Turner", "Hart", "Moss"], "Sherlock Holmes": ["Owen Turner", "Paul Hart", "Ian Moss"],
        "Watson": ["Baker", "Reed", "Fox"], "Lestrade": ["Pike"], "Baker Street": ["Hart Street"],
        "Irene Adler": ["Megan Cole"], "McCarthy": ["Dunn"], "Windibank": ["Parry"],
        "Hosmer Angel": ["Victor Lumley"], "carbuncle": ["lantern"], "St. Simon": ["Rowe"],
    }
    for tok in (smol_tokenizer, gemma_tokenizer):
        blocks = make_blocks([Document("s", sherlock_text)], tok, 512)
        translator = Translator(table, tok)
        rng = random.Random(0)
        t0 = time.perf_counter()
        results = [translator.translate(b, rng) for b in blocks]
        per_block = (time.perf_counter() - t0) / len(blocks)
        assert per_block < 0.05, f"{per_block * 1000:.1f} ms per block"
        n_anchors = sum(tb.n_anchors for tb in results)
        assert n_anchors == sum(len(translator.find(b.text)) for b in blocks) > 700
        assert sum(tb.uncalibrated_regions for tb in results) == 0
        for b, tb in zip(blocks, results, strict=True):
            check_invariants(tok, b, tb, prefix_check=False)
