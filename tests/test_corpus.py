"""Corpus: reading (files, folders, JSONL, lists, datasets), normalisation, and lossless token blocks."""

from __future__ import annotations

import json
import unicodedata

import pytest

from llm_unlearn.corpus import (
    Block,
    Document,
    load_blocks,
    make_blocks,
    normalize_text,
    read_blocks,
    read_corpus,
    save_blocks,
    split_blocks,
)
from llm_unlearn.errors import CorpusError

# Decomposed "é" (e + combining acute) must become the composed form; curly quotes and dashes stay.
DECOMPOSED = "Cafe\u0301 \u201cquoted\u201d \u2018single\u2019 \u2014 dash"
COMPOSED = "Caf\u00e9 \u201cquoted\u201d \u2018single\u2019 \u2014 dash"

# Multi-byte characters that byte-level BPE splits into several tokens, so that block boundaries land inside them.
TRICKY = normalize_text(
    "Holmes \U0001F575\ufe0f\u200d\u2642\ufe0f said \u201cElementary\u201d \u2014 \u65e5\u672c\u8a9e "
    "\U0001F469\u200d\U0001F469\u200d\U0001F467 na\u00efve caf\u00e9 \u00c5ngstr\u00f6m \U0001F600\U0001F600\n\n"
    "  indented\tline with trailing spaces   \n"
) * 6


def decoded(tokenizer, block: Block) -> str:
    return tokenizer.decode(block.input_ids[block.n_prefix:])


# ---- reading -----------------------------------------------------------------------------------------------


def test_txt_and_md_files_are_normalised(tmp_path):
    for name in ("a.txt", "b.md"):
        (tmp_path / name).write_text(DECOMPOSED, encoding="utf-8")
        (doc,) = read_corpus(tmp_path / name)
        assert doc.text == COMPOSED
        assert doc.name == name
        assert unicodedata.is_normalized("NFC", doc.text)


def test_crlf_and_cr_become_lf_and_bom_is_dropped(tmp_path):
    path = tmp_path / "win.txt"
    path.write_bytes("\ufeffline one\r\nline two\rline three\r\n".encode())
    assert read_corpus(path)[0].text == "line one\nline two\nline three\n"


def test_str_path_works_too(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("hello", encoding="utf-8")
    assert read_corpus(str(path))[0].text == "hello"


def test_folder_is_read_recursively_in_sorted_order(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "b.txt").write_text("second", encoding="utf-8")
    (tmp_path / "a.md").write_text("first", encoding="utf-8")
    (tmp_path / "sub" / "c.txt").write_text("third", encoding="utf-8")
    (tmp_path / "ignored.json").write_text("{}", encoding="utf-8")
    (tmp_path / "image.png").write_bytes(b"\x89PNG\x00\x00")
    docs = read_corpus(tmp_path)
    assert [d.text for d in docs] == ["first", "second", "third"]
    assert [d.name for d in docs] == ["a.md", "b.txt", "sub/c.txt"]


def test_folder_without_text_files(tmp_path):
    (tmp_path / "x.json").write_text("{}", encoding="utf-8")
    with pytest.raises(CorpusError, match="no .txt or .md"):
        read_corpus(tmp_path)


def test_jsonl_text_field(tmp_path):
    path = tmp_path / "c.jsonl"
    rows = [{"text": DECOMPOSED, "id": 1}, {"text": "   "}, {"text": "line\u2028sep inside a JSON string"}]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n\n", encoding="utf-8")
    docs = read_corpus(path)
    assert [d.text for d in docs] == [COMPOSED, "line\u2028sep inside a JSON string"]  # blank text skipped

    path2 = tmp_path / "d.jsonl"
    path2.write_text(json.dumps({"body": "abc"}) + "\n", encoding="utf-8")
    assert read_corpus(path2, text_field="body")[0].text == "abc"
    with pytest.raises(CorpusError, match=r"d.jsonl:1: no 'text' field"):
        read_corpus(path2)


@pytest.mark.parametrize(
    "content, match",
    [
        (b'{"text": "ok"}\n{not json}\n', r":2: not valid JSON"),
        (b'{"text": null}\n', r"must be a string"),
        (b'{"text": "caf\xe9"}\n', r"not valid UTF-8"),
        (b"", r"contains no text"),
    ],
)
def test_bad_jsonl(tmp_path, content, match):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    with pytest.raises(CorpusError, match=match):
        read_corpus(path)


def test_list_of_strings():
    docs = read_corpus([DECOMPOSED, "", "two\r\n"])
    assert [d.text for d in docs] == [COMPOSED, "two\n"]
    with pytest.raises(CorpusError, match="only strings"):
        read_corpus(["a", 3])
    with pytest.raises(CorpusError, match="no text"):
        read_corpus(["", "  "])


def test_datasets_dataset():
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"text": [DECOMPOSED, "", "b"], "other": [1, 2, 3]})
    assert [d.text for d in read_corpus(ds)] == [COMPOSED, "b"]
    with pytest.raises(CorpusError, match="no column 'body'"):
        read_corpus(ds, text_field="body")
    with pytest.raises(CorpusError, match="must hold strings"):
        read_corpus(datasets.Dataset.from_dict({"text": ["a", None]}))


def test_datasets_id_offline_is_a_corpus_error(monkeypatch):
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(CorpusError, match="could not load the dataset 'no-such-user/no-such-dataset'"):
        read_corpus("no-such-user/no-such-dataset")


@pytest.mark.parametrize(
    "content, match",
    [
        (b"", "empty"),
        (b"  \n\n\t ", "empty"),
        (b"text\x00\x01\x02binary", "binary"),
        ("UTF-16 text".encode("utf-16"), "binary"),
        ("caf\u00e9 cr\u00e8me".encode("latin-1"), "not valid UTF-8"),
    ],
)
def test_bad_text_files(tmp_path, content, match):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(CorpusError, match=match) as err:
        read_corpus(path)
    assert str(path) in str(err.value)


def test_missing_and_none_sources(tmp_path):
    with pytest.raises(CorpusError, match="not found"):
        read_corpus(tmp_path / "missing.txt")
    with pytest.raises(CorpusError, match="no corpus given"):
        read_corpus(None)
    with pytest.raises(CorpusError, match="unsupported"):
        read_corpus(42)


# ---- blocks ------------------------------------------------------------------------------------------------


def check_blocks(blocks, docs, tokenizer, block_size):
    """The invariants every caller relies on."""
    assert blocks
    for doc_index, doc in enumerate(docs):
        mine = [b for b in blocks if b.doc_index == doc_index]
        assert "".join(b.text for b in mine) == doc.text
        assert "".join(decoded(tokenizer, b) for b in mine) == doc.text
        for b in mine:
            assert doc.text[b.char_start:b.char_start + len(b.text)] == b.text
    for b in blocks:
        assert 0 < len(b) <= block_size
        assert len(b.offsets) == len(b.input_ids)
        for start, end in b.offsets[b.n_prefix:]:
            assert 0 <= start <= end <= len(b.text)


def test_sherlock_blocks_rejoin_exactly_smollm2(sherlock_path, sherlock_text, smol_tokenizer):
    blocks = load_blocks(sherlock_path, smol_tokenizer, block_size=512)
    assert len(blocks) > 200  # ~146k tokens
    assert all(b.n_prefix == 0 for b in blocks)  # SmolLM2 adds no BOS
    assert "\u201c" in sherlock_text or "\u2019" in sherlock_text or '"' in sherlock_text
    check_blocks(blocks, [Document("sherlock", sherlock_text)], smol_tokenizer, 512)
    assert sum(len(b) == 512 for b in blocks) >= len(blocks) - 2  # blocks are full except the end


def test_sherlock_blocks_rejoin_exactly_gemma(sherlock_path, sherlock_text, gemma_tokenizer):
    blocks = load_blocks(sherlock_path, gemma_tokenizer, block_size=512)
    assert len(blocks) > 200
    bos = gemma_tokenizer.bos_token_id
    assert all(b.n_prefix == 1 and b.input_ids[0] == bos and b.offsets[0] == (0, 0) for b in blocks)
    assert all(bos not in b.input_ids[1:] for b in blocks)
    check_blocks(blocks, [Document("sherlock", sherlock_text)], gemma_tokenizer, 512)


@pytest.mark.parametrize("tok_name", ["smol_tokenizer", "gemma_tokenizer"])
@pytest.mark.parametrize("block_size", [5, 6, 7, 9, 16, 33])
def test_multibyte_characters_at_block_boundaries(request, tok_name, block_size):
    tokenizer = request.getfixturevalue(tok_name)
    docs = read_corpus([TRICKY, "short"])
    blocks = make_blocks(docs, tokenizer, block_size=block_size)
    check_blocks(blocks, docs, tokenizer, block_size)
    assert {b.doc_index for b in blocks} == {0, 1}
    for b in blocks:  # no character is split between blocks: each block decodes to exactly its own text
        assert decoded(tokenizer, b) == b.text


def test_last_partial_block_is_kept(smol_tokenizer):
    text = "one two three four five six seven eight nine ten eleven"
    n = len(smol_tokenizer(text, add_special_tokens=False)["input_ids"])
    blocks = make_blocks([Document("d", text)], smol_tokenizer, block_size=4)
    assert [len(b) for b in blocks[:-1]] == [4] * (len(blocks) - 1)
    assert 0 < len(blocks[-1]) <= 4
    assert sum(len(b) for b in blocks) == n
    assert "".join(b.text for b in blocks) == text


def test_gemma_bos_counts_toward_block_size(gemma_tokenizer):
    text = "one two three four five six seven eight nine ten"
    n = len(gemma_tokenizer(text, add_special_tokens=False)["input_ids"])
    blocks = make_blocks([Document("d", text)], gemma_tokenizer, block_size=5)
    assert all(len(b) <= 5 and b.n_prefix == 1 for b in blocks)
    assert sum(len(b) - 1 for b in blocks) == n


def test_block_size_too_small(smol_tokenizer, gemma_tokenizer):
    with pytest.raises(CorpusError, match="too small"):
        make_blocks([Document("d", "x")], smol_tokenizer, block_size=3)
    with pytest.raises(CorpusError, match="too small"):
        make_blocks([Document("d", "x")], gemma_tokenizer, block_size=4)  # BOS leaves only 3


def test_slow_tokenizer_is_rejected():
    class Slow:
        is_fast = False

    with pytest.raises(CorpusError, match="fast tokenizer"):
        make_blocks([Document("d", "x")], Slow())


def test_load_blocks_slicing(smol_tokenizer):
    text = " ".join(f"word{i}" for i in range(200))
    all_blocks = load_blocks([text], smol_tokenizer, block_size=16)
    part = load_blocks([text], smol_tokenizer, block_size=16, start_block=2, max_blocks=3)
    assert [b.text for b in part] == [b.text for b in all_blocks[2:5]]
    with pytest.raises(CorpusError, match="no blocks"):
        load_blocks([text], smol_tokenizer, block_size=16, start_block=10_000)
    # spread: the N blocks are evenly spaced over the whole text (first and last part included), in order
    n = len(all_blocks)
    spread = load_blocks([text], smol_tokenizer, block_size=16, max_blocks=4, sampling="spread")
    idx = [next(i for i, b in enumerate(all_blocks) if b.text == s.text) for s in spread]
    assert len(idx) == 4 and idx[0] == 0 and idx == sorted(idx) and idx[-1] >= n - n // 4 - 1
    assert min(b - a for a, b in zip(idx, idx[1:], strict=False)) >= n // 4 - 1
    # asking for more blocks than there are gives them all
    assert len(load_blocks([text], smol_tokenizer, block_size=16, max_blocks=n + 5, sampling="spread")) == n


def test_blocks_save_and_read_round_trip(tmp_path, smol_tokenizer):
    blocks = make_blocks(read_corpus([TRICKY]), smol_tokenizer, block_size=16)
    save_blocks(blocks, tmp_path / "blocks.jsonl")
    again = read_blocks(tmp_path / "blocks.jsonl")
    assert [(b.text, b.input_ids, b.offsets, b.n_prefix, b.char_start) for b in again] == \
           [(b.text, b.input_ids, b.offsets, b.n_prefix, b.char_start) for b in blocks]


def test_split_blocks_is_deterministic_and_disjoint():
    blocks = [Block(0, i, "x", [1], [(0, 1)]) for i in range(40)]
    train, val = split_blocks(blocks, 0.1, seed=0)
    assert len(val) == 4 and sorted(train + val) == list(range(40))
    assert split_blocks(blocks, 0.1, seed=0) == (train, val)
    assert split_blocks(blocks, 0.0) == (list(range(40)), [])
