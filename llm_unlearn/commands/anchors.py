"""`llm-unlearn anchors`: find anchored terms in a corpus, propose generic translations, and show the result
(top anchors and one block before/after translation) so the dictionary can be judged before spending compute."""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "anchors",
        help="extract anchored terms (names, places, rare words) and their generic translations from a corpus",
        description="Extract anchored terms with spaCy, score them against general English (wordfreq), let the base "
                    "model propose generic translations of the same kind (Faker for names it leaves without one), "
                    "merge a user dictionary, write a YAML/JSON dictionary, and measure it (perplexity of translated "
                    "/ original text; kind agreement with --kind-labels).",
    )
    p.add_argument("--corpus", required=True, metavar="PATH", help=".txt/.md file, folder of them, or .jsonl")
    p.add_argument("--text-field", default="text", help="text field of a .jsonl corpus (default: text)")
    p.add_argument("--out", metavar="FILE", default=None,
                   help="dictionary to write (.yaml, or .json); default anchors.yaml, or nothing when only "
                        "--show is given")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--top-k", type=int, default=None, help="how many anchored terms to keep (default 200)")
    p.add_argument("--min-count", type=int, default=None, help="minimum mentions of a term (default 3)")
    p.add_argument("--translations", type=int, default=None, metavar="N",
                   help="generic translations per term (default 3)")
    p.add_argument("--spacy-model", default=None, help="spaCy pipeline (default: the installed English one)")
    p.add_argument("--user-dictionary", default=None, metavar="FILE",
                   help="YAML/JSON mapping merged last: `Key: [translations]` adds/replaces, `Key: null` vetoes")
    p.add_argument("--no-rare-words", action="store_true", help="names only; skip rare common nouns")
    p.add_argument("--show", type=int, default=None, metavar="N",
                   help="print the top N anchors and a sample block before/after translation")
    p.add_argument("--model", default="smollm2-135m",
                   help="base model spec: proposes substitutes, cuts the sample block and measures the dictionary "
                        "(default smollm2-135m; 'none' = Faker substitutes, no sample, no measures)")
    p.add_argument("--substitutes", choices=["model", "faker", "chat"], default=None,
                   help="where generic translations come from (default faker: Faker names and places, ordinary "
                        "nouns; model: the base model's in-context predictions, Faker for names it leaves without "
                        "one; chat: --chat writes them first)")
    p.add_argument("--chat", default=None, metavar="SPEC",
                   help="chat model for --substitutes chat: hf:MODEL_SPEC or openai:BASE_URL (optional)")
    p.add_argument("--chat-model", default=None, help="model name at an OpenAI-compatible --chat endpoint")
    p.add_argument("--target", default="", help="name of the concept to forget, for the chat model's prompt")
    p.add_argument("--block-size", type=int, default=256, help="tokens in the sample block (default 256)")
    p.add_argument("--quality-tokens", type=int, default=None, metavar="N",
                   help="tokens of the corpus over which the base model's perplexity of translated / original text "
                        "is measured (default 4096; 0 skips it)")
    p.add_argument("--kind-labels", default=None, metavar="FILE",
                   help="hand-labelled kinds {kinds: {term: kind}, genders: {term: f|m}} (tests/data/anchor_kinds_*.yaml)"
                        " to measure the kind and gender agreement of the substitutes")
    p.add_argument("--kinds", choices=["evidence", "ner"], default=None,
                   help="how each term's kind of substitute is chosen (default evidence: cues at all its mentions, "
                        "shown by --show; ner: spaCy's labels)")
    p.add_argument("--keep-period-words", action="store_true",
                   help="keep ordinary words of another time and dialect spellings as anchors (rules D1-D4)")
    p.add_argument("--seed", type=int, default=0, help="seed for translations and the sample block's choices")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..config import AnchorsConfig
    from ..corpus import read_corpus
    from ..errors import AnchorError
    from ..whp.anchors import build_anchor_dictionary, measure_dictionary
    from ..whp.anchors.stage import warn_unmatched_vetoes

    out = Path(args.out) if args.out else (None if args.show is not None else Path("anchors.yaml"))
    if out is not None and out.is_dir():
        raise AnchorError(f"--out {out} is a directory; give a file name such as {out / 'anchors.yaml'}")
    if out is not None and out.exists() and not args.overwrite:
        raise AnchorError(f"{out} already exists; pass --overwrite to replace it, or choose another --out")
    if args.show is not None and args.show < 0:
        raise AnchorError("--show N needs N >= 0")
    config = AnchorsConfig(seed=args.seed, spacy_model=args.spacy_model, user_dictionary=args.user_dictionary,
                           include_rare_words=not args.no_rare_words, kind_labels=args.kind_labels,
                           substitute_chat=args.chat, substitute_chat_model=args.chat_model)
    config.period_words = not args.keep_period_words
    for name, value in (("top_k", args.top_k), ("min_count", args.min_count),
                        ("translations_per_key", args.translations), ("substitutes", args.substitutes),
                        ("quality_tokens", args.quality_tokens), ("kinds", args.kinds)):
        if value is not None:
            setattr(config, name, value)
    docs = read_corpus(args.corpus, text_field=args.text_field)
    n_words = sum(len(d.text.split()) for d in docs)
    t0 = time.perf_counter()
    lm = None
    if args.model.lower() != "none" and (config.substitutes != "faker" or config.quality_tokens > 0):
        from ..models import load_model

        lm = load_model(args.model)
    texts = [d.text for d in docs]
    dictionary = build_anchor_dictionary(texts, config, progress=sys.stderr.isatty(),
                                         model=lm if config.substitutes != "faker" else None, target=args.target)
    seconds = time.perf_counter() - t0
    warn_unmatched_vetoes(dictionary.vetoed, [d.text for d in docs])
    print(f"{len(dictionary)} anchored terms from {len(docs)} document(s), {n_words:,} words, in {seconds:.1f} s")
    if not len(dictionary):
        print("warning: no anchored terms found; lower --min-count, or add terms with --user-dictionary",
              file=sys.stderr)
    if out is not None:
        dictionary.save(out)
        print(f"wrote {out}")
    measures = measure_dictionary(dictionary, texts, config, lm, progress=sys.stderr.isatty())
    show_measures(measures)
    if args.show:
        show_dictionary(dictionary, args.show)
        if args.model.lower() != "none" and len(dictionary):
            show_sample(dictionary, docs, args.model, args.block_size, args.seed)
    return 0


def show_measures(measures: dict) -> None:
    """Print the dictionary quality measures (llm_unlearn/anchors/quality.py)."""
    ppl = measures.get("perplexity")
    if ppl:
        print(f"perplexity of translated / original text: {ppl['ratio']:.3f} ({ppl['perplexity_translated']:.2f} / "
              f"{ppl['perplexity_original']:.2f} over {ppl['tokens']} tokens of {ppl['blocks']} blocks, "
              f"{ppl['anchor_occurrences']} anchors); at the positions labels keep: {ppl['ratio_kept']:.3f}")
    kinds = measures.get("kinds")
    if kinds:
        agree = "n/a" if kinds["agreement"] is None else f"{100 * kinds['agreement']:.0f}%"
        print(f"kind agreement: {agree} over {kinds['labelled_keys']} of {kinds['labelled_terms']} labelled terms "
              f"that are keys" + (f"; ordinary words that are keys: {', '.join(kinds['unwanted_keys'])}"
                                  if kinds["unwanted_keys"] else ""))
    genders = measures.get("genders")
    if genders and genders["given_names"]:
        print(f"gender agreement: {100 * genders['agreement']:.0f}% of {genders['given_names']} given-name "
              f"substitutes of {genders['labelled_keys']} labelled persons")


def show_dictionary(dictionary, n: int) -> None:
    entries = dictionary.entries()[:n]
    if not entries:
        return
    width = min(max(len(e.key) for e in entries), 32)
    print(f"\n{'#':>4}  {'anchored term':<{width}}  {'kind':<8}  {'count':>5}  {'score':>7}  translations")
    for i, e in enumerate(entries, 1):
        print(f"{i:>4}  {e.key:<{width}}  {e.type:<8}  {e.count:>5}  {e.score:>7.1f}  {', '.join(e.translations)}")
        if e.evidence:  # what decided the kind (llm_unlearn/anchors/kinds.py)
            print(f"{'':>4}  {'':<{width}}  why: {e.evidence}")
    if dictionary.vetoed:
        print(f"vetoed: {', '.join(dictionary.vetoed)}")


def show_sample(dictionary, docs, model: str, block_size: int, seed: int) -> None:
    """Translate the block with the most distinct anchored terms and print it before and after."""
    import numpy as np

    from ..corpus import make_blocks
    from ..models import load_tokenizer
    from ..whp.translation import Translator

    tokenizer = load_tokenizer(model)
    blocks = make_blocks(docs, tokenizer, block_size)
    translator = Translator(dictionary, tokenizer)
    best = max(range(len(blocks)), key=lambda i: (len({m[2] for m in translator.find(blocks[i].text)}), -i))
    block = blocks[best]
    tb = translator.translate(block, random.Random(seed))
    mask = tb.mask_reason
    print(f"\nsample block {best + 1}/{len(blocks)} ({model}, {len(block)} tokens -> {len(tb.translated_ids)}):")
    print("--- before " + "-" * 60)
    print(block.text)
    print("--- after " + "-" * 61)
    print(tb.translated_text)
    print("-" * 71)
    print(f"{tb.n_anchors} anchor occurrences; chosen: "
          + "; ".join(f"{k} -> {v}" for k, v in tb.chosen.items()))
    print(f"loss kept at {int(np.sum(mask == 0))} positions, {int(np.sum(mask == 1))} inside anchors, "
          f"{int(np.sum(mask == 2))} predicting a repeated anchor; {len(tb.suppress_from)} suppression start(s)")
