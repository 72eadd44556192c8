#!/usr/bin/env python
"""Generic text rich in names, for WHP's retain guard (an issue-#16 experiment, session 10).

    python bench/name_dense_text.py llm_unlearn/data/wikitext2/valid.txt --out runs/name_dense_valid.txt
    llm-unlearn run --out runs/X --set finetune.retain_corpus=runs/name_dense_valid.txt --overwrite

The control suite's losses are famous names completed with invented ones ("The teenage detective Nancy" -> " Carter").
The guard holds the model to the base model on generic text; this keeps the paragraphs of that text (of at least
``--min-words`` words) with the most capitalised words inside sentences (names, titles, places) per word, up to
``--chars`` characters, in their original order: the guard then sees names in context at most of its steps. Nothing
of the evaluation suites is used.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llm_unlearn.runio import atomic_write_text  # noqa: E402

SENTENCE_ENDS = (".", "!", "?", ":", '"')


def name_density(paragraph: str) -> float:
    """Share of the words that start with a capital letter and do not start a sentence (WikiText's ``<unk>`` is not
    a name)."""
    words = paragraph.split()
    if len(words) < 2:
        return 0.0
    names = sum(1 for prev, word in zip(words, words[1:], strict=False) if word[:1].isupper() and word != "<unk>"
                and not prev.endswith(SENTENCE_ENDS))
    return names / len(words)


def name_dense(text: str, chars: int, min_words: int = 60) -> list[str]:
    """The paragraphs (non-empty lines that are not WikiText headings) with the highest :func:`name_density`, until
    ``chars`` characters are reached, in their original order."""
    paragraphs = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("=")]
    # ties: the later paragraph first (as in the session-10 runs' file)
    ranked = sorted((i for i, p in enumerate(paragraphs) if len(p.split()) >= min_words),
                    key=lambda i: (-name_density(paragraphs[i]), -i))
    kept, total = [], 0
    for i in ranked:
        if total >= chars:
            break
        kept.append(i)
        total += len(paragraphs[i])
    return [paragraphs[i] for i in sorted(kept)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="generic text (e.g. WikiText-2 valid.txt)")
    parser.add_argument("--out", type=Path, required=True, help="text file to write")
    parser.add_argument("--chars", type=int, default=90_000, help="characters to keep (default 90,000: ~80 blocks)")
    parser.add_argument("--min-words", type=int, default=60, help="shortest paragraph kept (words)")
    args = parser.parse_args(argv)
    if not args.source.is_file():
        raise SystemExit(f"error: {args.source} not found: give a text file (e.g. llm_unlearn/data/wikitext2/valid.txt)")
    kept = name_dense(args.source.read_text(encoding="utf-8"), args.chars, args.min_words)
    if not kept:
        raise SystemExit(f"error: {args.source} has no paragraph of at least {args.min_words} words")
    atomic_write_text(args.out, "\n\n".join(kept) + "\n")
    print(f"{len(kept)} paragraphs, {sum(map(len, kept))} characters -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
