"""Stage 0b: the target corpus, read and cut into token blocks.

Reading: a .txt/.md file, a folder of them (recursive, sorted), a .jsonl file with a text field, a list of
strings, a ``datasets.Dataset``, a file of the data folder as ``data:REL`` or a ``datasets`` source as
``hf:NAME[:CONFIG][:SPLIT]`` (a Hub id online, or a local dataset folder offline; :mod:`llm_unlearn.config.datadir`). Text is normalised to Unicode NFC and
``\\r\\n`` line ends become ``\\n``; curly quotes and other characters are kept as they are.

Blocking: each document is tokenized once with offset mappings and cut into blocks of at most ``block_size``
tokens. A block never splits a character across two blocks (byte-level BPE can split one character into
several tokens), so each block covers an exact slice of the document text and the slices, joined, give back
the document. The last block of a document is kept even when shorter (it is padded at batch time with
``attention_mask=0`` and label ``-100``, so no text is lost and padding is never trained on). When the tokenizer
adds a BOS token by default (Gemma, Llama), every block starts with it and it counts toward ``block_size``.
"""

from __future__ import annotations

import json
import logging
import os
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .config.datadir import is_data_ref, is_hf_ref, parse_hf_ref, resolve_data_ref
from .errors import CorpusError

logger = logging.getLogger(__name__)

TEXT_SUFFIXES = (".txt", ".md")


@dataclass
class Document:
    name: str
    text: str


@dataclass
class Block:
    """A slice of one document as tokens.

    ``offsets[i]`` is the (start, end) character span of token ``i`` in ``text`` (the block's own text);
    special tokens (BOS) have ``(0, 0)`` and are counted in ``n_prefix``.
    """

    doc_index: int
    char_start: int  # where ``text`` starts in the document
    text: str
    input_ids: list[int]
    offsets: list[tuple[int, int]]
    n_prefix: int = 0  # special tokens at the start (BOS)
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.input_ids)


def normalize_text(text: str) -> str:
    """NFC and \\n line ends. Nothing else: quotes, dashes and spacing are kept."""
    return unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))


def _read_text_file(path: Path) -> str:
    data = path.read_bytes()
    if not data.strip():
        raise CorpusError(f"{path} is empty; a target corpus needs text to forget.")
    if b"\x00" in data[:8192]:
        raise CorpusError(
            f"{path} looks binary (contains NUL bytes); pass a UTF-8 text file (a UTF-16 text file must be "
            "re-encoded first, e.g. `iconv -f utf-16 -t utf-8 in.txt > out.txt`)."
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CorpusError(
            f"{path} is not valid UTF-8 (byte {exc.start}: {data[exc.start:exc.start + 4]!r}); "
            "re-encode it, e.g. `iconv -f latin1 -t utf-8 in.txt > out.txt`."
        ) from exc
    return normalize_text(text)


def _read_jsonl(path: Path, text_field: str) -> list[Document]:
    docs = []
    data = path.read_bytes()
    if b"\x00" in data[:8192]:
        raise CorpusError(f"{path} looks binary (contains NUL bytes); pass a UTF-8 JSON-lines file.")
    try:
        content = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CorpusError(f"{path} is not valid UTF-8 (byte {exc.start}); re-encode it as UTF-8.") from exc
    for lineno, line in enumerate(content.split("\n"), 1):  # not splitlines(): JSON strings may hold U+2028
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CorpusError(f"{path}:{lineno}: not valid JSON: {exc}") from exc
        if not isinstance(obj, dict) or text_field not in obj:
            raise CorpusError(f"{path}:{lineno}: no '{text_field}' field (set corpus.text_field)")
        value = obj[text_field]
        if not isinstance(value, str):
            raise CorpusError(f"{path}:{lineno}: field '{text_field}' must be a string, got {type(value).__name__}")
        if value.strip():
            docs.append(Document(f"{path.name}:{lineno}", normalize_text(value)))
    return docs


def texts_jsonl(texts: Iterable[str]) -> str:
    """Texts as JSONL lines ``{"text": ...}``: the corpus format :func:`read_corpus` reads back."""
    return "".join(json.dumps({"text": t}) + "\n" for t in texts)


def whole_corpus_texts(corpus_cfg) -> list[str]:
    """Every text of a recipe's target corpus (``corpus.path`` and ``corpus.extra_paths``), whatever slice of it is
    unlearned: what term statistics (anchors' keyness, the labels' target words) are counted on."""
    return [d.text for src in [corpus_cfg.path, *corpus_cfg.extra_paths]
            for d in read_corpus(src, corpus_cfg.text_field, corpus_cfg.split)]


def read_corpus(source, text_field: str = "text", split: str = "train") -> list[Document]:
    """Read a target corpus into documents (see module docstring for accepted sources)."""
    if source is None:
        raise CorpusError("no corpus given: set corpus.path in the recipe (--set corpus.path=PATH)")
    if is_data_ref(source):
        source = resolve_data_ref(source, "corpus")
    if is_hf_ref(source):
        name, config, hf_split = parse_hf_ref(source)
        return _read_hf_dataset(name, text_field, hf_split, config)
    if isinstance(source, str) and not os.path.exists(source) and "\n" not in source and _looks_like_dataset_id(source):
        return _read_hf_dataset(source, text_field, split)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        if not path.exists():
            raise CorpusError(f"corpus not found: {path}")
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
            if not files:
                raise CorpusError(f"{path} holds no .txt or .md files")
            docs = [Document(str(p.relative_to(path)), _read_text_file(p)) for p in files]
        elif path.suffix.lower() == ".jsonl":
            docs = _read_jsonl(path, text_field)
        else:
            docs = [Document(path.name, _read_text_file(path))]
    elif _is_hf_dataset(source):
        if text_field not in source.column_names:
            raise CorpusError(f"dataset has no column '{text_field}' (columns: {source.column_names})")
        column = source[text_field]
        bad = next((i for i, t in enumerate(column) if not isinstance(t, str)), None)
        if bad is not None:
            raise CorpusError(f"dataset column '{text_field}' must hold strings; row {bad} is {type(column[bad]).__name__}")
        docs = [Document(f"row{i}", normalize_text(t)) for i, t in enumerate(column) if t.strip()]
    elif isinstance(source, Iterable):
        items = list(source)
        if not all(isinstance(t, str) for t in items):
            raise CorpusError("a corpus given as a list must contain only strings")
        docs = [Document(f"text{i}", normalize_text(t)) for i, t in enumerate(items) if t.strip()]
    else:
        raise CorpusError(f"unsupported corpus source of type {type(source).__name__}")
    if not docs:
        raise CorpusError(f"corpus {source!r} contains no text")
    return docs


def _looks_like_dataset_id(text: str) -> bool:
    return "/" in text and not text.startswith((".", "/", "~")) and not Path(text).suffix


def _is_hf_dataset(obj) -> bool:
    return type(obj).__name__ == "Dataset" and hasattr(obj, "column_names")


def _read_hf_dataset(name: str, text_field: str, split: str, config: str | None = None) -> list[Document]:
    try:
        import datasets

        ds = datasets.load_dataset(name, config, split=split)
    except Exception as exc:  # datasets raises many types; all mean "cannot get it"
        raise CorpusError(f"could not load the dataset '{name}' (split {split}): {exc}. Offline? Pass a file path.") from exc
    return read_corpus(ds, text_field=text_field)


def _adds_bos(tokenizer) -> bool:
    bos = tokenizer.bos_token_id
    if bos is None:
        return False
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return len(ids) > 0 and ids[0] == bos


def _safe_cut(offsets: Sequence[tuple[int, int]], cut: int, lo: int) -> int:
    """Move a block boundary left until it does not split a character between two tokens."""
    while cut > lo + 1 and offsets[cut][0] < offsets[cut - 1][1]:
        cut -= 1
    return cut


def make_blocks(documents: Sequence[Document], tokenizer, block_size: int = 512) -> list[Block]:
    """Tokenize each document once (with offsets) and cut it into blocks of at most ``block_size`` tokens."""
    if not getattr(tokenizer, "is_fast", False):
        raise CorpusError("a fast tokenizer (with offset mapping) is required")
    bos = [tokenizer.bos_token_id] if _adds_bos(tokenizer) else []
    room = block_size - len(bos)
    if room < 4:
        raise CorpusError(f"block_size {block_size} is too small")
    blocks: list[Block] = []
    for d_index, doc in enumerate(documents):
        # verbose=False: a whole document is longer than model_max_length on purpose (it is cut below).
        enc = tokenizer(doc.text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        ids, offs = enc["input_ids"], enc["offset_mapping"]
        start = 0
        while start < len(ids):
            end = min(start + room, len(ids))
            if end < len(ids):
                end = _safe_cut(offs, end, start)
            # The block's text runs from the start of its first token to the start of the next block
            # (so whitespace between tokens is never lost).
            c0 = 0 if start == 0 else offs[start][0]
            c1 = len(doc.text) if end == len(ids) else offs[end][0]
            text = doc.text[c0:c1]
            rel = [(max(a - c0, 0), max(b - c0, 0)) for a, b in offs[start:end]]
            blocks.append(Block(d_index, c0, text, bos + list(ids[start:end]), [(0, 0)] * len(bos) + rel, len(bos)))
            start = end
    return blocks


def split_blocks(blocks: list[Block], validation_fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """Deterministic train/validation split of block indices (validation = every k-th block, spread out)."""
    n = len(blocks)
    n_val = int(round(n * validation_fraction))
    if validation_fraction > 0 and n >= 4:
        n_val = max(n_val, 1)
    if n_val == 0:
        return list(range(n)), []
    step = n / n_val
    val = sorted({min(n - 1, int(i * step + (seed % max(int(step), 1)))) for i in range(n_val)})
    train = [i for i in range(n) if i not in set(val)]
    return train, val


def split_relearn(train: list[int], relearn_fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """Take a relearn slice (every k-th block, spread out) from the training blocks; no stage trains on it.

    With ``relearn_fraction == 0`` the training blocks are returned unchanged (runs made before the slice existed
    keep their split)."""
    if relearn_fraction <= 0 or len(train) < 2:
        return list(train), []
    n = len(train)
    n_rel = min(n - 1, max(1, int(round(n * relearn_fraction))))
    step = n / n_rel
    # offset by one from the validation pick, so the two slices interleave rather than sit side by side
    pos = sorted({min(n - 1, int(i * step + ((seed + 1) % max(int(step), 1)))) for i in range(n_rel)})
    relearn = [train[i] for i in pos]
    keep = set(relearn)
    return [i for i in train if i not in keep], relearn


def load_blocks(source, tokenizer, block_size: int = 512, text_field: str = "text", split: str = "train",
                start_block: int = 0, max_blocks: int | None = None, sampling: str = "first") -> list[Block]:
    """read_corpus + make_blocks + slicing: the corpus stage in one call.

    ``sampling="spread"`` takes the ``max_blocks`` blocks evenly spaced over the text after ``start_block``
    instead of the first ones."""
    blocks = make_blocks(read_corpus(source, text_field=text_field, split=split), tokenizer, block_size)
    blocks = blocks[start_block:]
    if max_blocks is not None and sampling == "spread" and max_blocks < len(blocks):
        step = len(blocks) / max_blocks
        blocks = [blocks[int(i * step)] for i in range(max_blocks)]
    elif max_blocks is not None:
        blocks = blocks[:max_blocks]
    if not blocks:
        raise CorpusError(f"corpus yields no blocks after start_block={start_block}, max_blocks={max_blocks}")
    return blocks


def save_blocks(blocks: list[Block], path: str | Path) -> None:
    from .runio import atomic_write_text

    rows = [json.dumps({"doc": b.doc_index, "char_start": b.char_start, "text": b.text, "input_ids": b.input_ids,
                        "offsets": b.offsets, "n_prefix": b.n_prefix}) for b in blocks]
    atomic_write_text(path, "\n".join(rows) + "\n")


def read_blocks(path: str | Path) -> list[Block]:
    out = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                r = json.loads(line)
                out.append(Block(r["doc"], r["char_start"], r["text"], r["input_ids"],
                                 [tuple(o) for o in r["offsets"]], r["n_prefix"]))
    return out


def read_split(run) -> dict[str, list[int]]:
    """The run's train / validation block indices (``corpus/split.json``): the one place the split is read."""
    return json.loads(Path(run.split).read_text())


def split_rows(run) -> tuple[list[dict], list[dict]]:
    """The target blocks of a run as training rows (``input_ids``), split into train and validation."""
    blocks = read_blocks(run.blocks)
    split = read_split(run)
    return ([{"input_ids": blocks[i].input_ids} for i in split["train"]],
            [{"input_ids": blocks[i].input_ids} for i in split["validation"]])


# ---- the corpus stage ------------------------------------------------------------------------------------
def run_corpus(run, recipe, progress: bool = True) -> dict:
    """corpus.path -> corpus/blocks.jsonl + corpus/split.json (train / validation block indices)."""
    from .errors import RecipeError
    from .models import load_model_config, load_tokenizer
    from .runio import atomic_write_json

    tokenizer = load_tokenizer(recipe.model.spec, trust_remote_code=recipe.model.trust_remote_code)
    ctx = getattr(load_model_config(recipe.model.spec), "max_position_embeddings", None)
    if ctx and recipe.corpus.block_size > ctx:
        raise RecipeError(f"corpus.block_size={recipe.corpus.block_size} is larger than the model's context "
                          f"length ({ctx}); lower it with --set corpus.block_size={min(512, ctx)}")
    source = recipe.corpus.path
    blocks = load_blocks(source, tokenizer, recipe.corpus.block_size, recipe.corpus.text_field, recipe.corpus.split,
                         recipe.corpus.start_block, recipe.corpus.max_blocks, recipe.corpus.block_sampling)
    n_docs = max(b.doc_index for b in blocks) + 1
    for extra in recipe.corpus.extra_paths:  # used whole: the slice options apply to corpus.path only
        more = load_blocks(extra, tokenizer, recipe.corpus.block_size, recipe.corpus.text_field, recipe.corpus.split)
        for b in more:
            b.doc_index += n_docs
        n_docs = max(b.doc_index for b in more) + 1
        blocks += more
    train, val = split_blocks(blocks, recipe.corpus.validation_fraction, recipe.corpus.seed)
    if not train:
        raise CorpusError(f"the corpus gives {len(blocks)} block(s), none left for training with "
                          f"corpus.validation_fraction={recipe.corpus.validation_fraction}; add text")
    train, relearn = split_relearn(train, recipe.corpus.relearn_fraction, recipe.corpus.seed)
    save_blocks(blocks, run.blocks)
    atomic_write_json(run.split, {"train": train, "validation": val, **({"relearn": relearn} if relearn else {})})
    tokens = sum(len(b) for b in blocks)
    if not val and recipe.corpus.validation_fraction > 0:
        logger.warning("corpus: only %d block(s) (%d tokens; corpus.block_size=%d): too few for validation blocks, "
                       "so training has no held-out loss, the best checkpoint is the last one and held-out "
                       "perplexity is not measured. Add text or lower corpus.block_size.",
                       len(blocks), tokens, recipe.corpus.block_size)
    logger.info("corpus: %d blocks (%d tokens), %d train / %d validation / %d relearn", len(blocks), tokens,
                len(train), len(val), len(relearn))
    return {"blocks": len(blocks), "tokens": tokens, "train_blocks": len(train), "validation_blocks": len(val),
            "relearn_blocks": len(relearn)}
