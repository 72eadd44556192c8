"""Kind and gender agreement of the automatic dictionary on the four bundled books (rules Q2, Q3 of
:mod:`.quality`), over each book's top-100 anchors, against the hand-labelled files in ``tests/data``.

    python -m llm_unlearn.whp.anchors.agreement [--labels-dir tests/data] [--top 100] [--misses]
                                            [--kinds ner --keep-period-words]

prints the table of docs/results.md ("Anchor kinds and gender on four books"). Default anchors settings
(``AnchorsConfig()``: Faker substitutes, no model), each book whole. The ordinary-word count is the number of
the book's ``not_anchors`` words among its top 150 keys (``top_k=150``)."""

from __future__ import annotations

import argparse
from pathlib import Path

BOOKS = {"sherlock": "sherlock_holmes_adventures.txt", "alice": "alice_in_wonderland.txt",
         "oz": "wonderful_wizard_of_oz.txt", "dracula": "dracula.txt"}
TOP = 100
ORDINARY_TOP = 150


def book_text(name: str) -> str:
    from ...config.datadir import data_dir

    return (data_dir() / "corpora" / BOOKS[name]).read_text(encoding="utf-8")


def measure_book(name: str, labels_dir: str | Path, top: int = TOP, config=None) -> dict:
    """Build the book's dictionary (default settings, ``top_k`` at least ``ORDINARY_TOP``) and measure it."""
    from ...config import AnchorsConfig
    from .dictionary import AnchorDictionary
    from .quality import gender_agreement, kind_agreement, load_kind_labels
    from .stage import build_anchor_dictionary

    config = config or AnchorsConfig()
    config.top_k = max(config.top_k, ORDINARY_TOP)
    labels = load_kind_labels(Path(labels_dir) / f"anchor_kinds_{name}.yaml")
    d = build_anchor_dictionary([book_text(name)], config, progress=False)
    top_d = AnchorDictionary(d.entries()[:top])
    kinds = kind_agreement(top_d, labels)
    genders = gender_agreement(top_d, labels)
    first150 = {k.lower() for k in d.keys()[:ORDINARY_TOP]}
    ordinary = [w for w in labels["not_anchors"] if w.lower() in first150]
    labelled = {t.lower() for t in labels["kinds"]} | {w.lower() for w in labels["not_anchors"]}
    unlabelled = [k for k in top_d.keys() if k.lower() not in labelled]
    return {"book": name, "keys": len(d), "top": len(top_d), "kinds": kinds, "genders": genders,
            "ordinary_in_top150": ordinary, "unlabelled": unlabelled, "dictionary": d}


def table(results: list[dict]) -> str:
    rows = ["| book | keys (top-100 judged) | labelled of those | kind agreement | gender agreement (given names) "
            "| ordinary/dialect words in top 150 |", "|---|---|---|---|---|---|"]
    for r in results:
        k, g = r["kinds"], r["genders"]
        kind = "n/a" if k["agreement"] is None else f"{100 * k['agreement']:.1f}%"
        gender = "n/a" if g["agreement"] is None else f"{100 * g['agreement']:.1f}% ({g['given_names']})"
        rows.append(f"| {r['book']} | {r['keys']} ({r['top']}) | {k['labelled_keys']} | {kind} | {gender} | "
                    f"{len(r['ordinary_in_top150'])}" + (f": {', '.join(r['ordinary_in_top150'])}"
                                                         if r["ordinary_in_top150"] else "") + " |")
    return "\n".join(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--labels-dir", default="tests/data")
    p.add_argument("--top", type=int, default=TOP)
    p.add_argument("--books", default=",".join(BOOKS))
    p.add_argument("--misses", action="store_true", help="list each disagreeing term")
    p.add_argument("--kinds", choices=["evidence", "ner"], default="evidence",
                   help="anchors.kinds (ner: the former spaCy-label kinds, for comparison)")
    p.add_argument("--keep-period-words", action="store_true", help="anchors.period_words: false")
    args = p.parse_args(argv)
    from ...config import AnchorsConfig

    results = [measure_book(b, args.labels_dir, args.top,
                            AnchorsConfig(kinds=args.kinds, period_words=not args.keep_period_words))
               for b in args.books.split(",")]
    print(table(results))
    if args.misses:
        for r in results:
            for key, v in r["kinds"]["per_term"].items():
                if v["agreement"] < 1:
                    print(f"{r['book']}: kind {key}: labelled {v['kind']}, typed {v['type']}, {v['translations']}")
            for key, v in r["genders"]["per_term"].items():
                if v["agreement"] < 1:
                    print(f"{r['book']}: gender {key}: labelled {v['gender']}, {v['translations']}")
            if r["unlabelled"]:
                print(f"{r['book']}: unlabelled keys in the top {args.top}: {', '.join(r['unlabelled'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
