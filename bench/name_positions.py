#!/usr/bin/env python
"""A diagnostic of issue #16: what do the labels at the anchors' edges contribute, to forgetting and to collateral
damage? Makes a new run directory from a finished run's upstream stages and labels, with the labels changed at the
anchors' edges only, for the fine-tune and evaluation to be redone.

    python bench/name_positions.py runs/spec_a20_noletters runs/diag_mask_entry_exit --mode mask
    python bench/name_positions.py runs/spec_a20_noletters runs/diag_min_entry_exit --mode original
    llm-unlearn run --out runs/diag_mask_entry_exit --overwrite      # fine-tune + eval: about 9 minutes

The edges of an anchor are the position that predicts its first token and its last token (which predicts what
follows it): where the labels put a generic name in place of the target's ("Sherlock" -> a surname, not " Holmes").
``--mode mask``: no loss there. ``--mode original``: the base model's own prediction on the ORIGINAL text with the
target's tokens removed (rule R2 without one-letter pieces): "do not say the target here" instead of "say a generic
name here". Every other position keeps the run's labels; upstream stages are copied, so the new run's labels are
not recomputed (its manifest says the labels stage is done). The new run appears only when it is complete.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llm_unlearn.anchors import AnchorDictionary  # noqa: E402
from llm_unlearn.corpus import read_blocks, whole_corpus_texts  # noqa: E402
from llm_unlearn.labels import IGNORE, alpha_key, block_rng, soft_keys, target_token_mask, target_words  # noqa: E402
from llm_unlearn.models import load_model  # noqa: E402
from llm_unlearn.recipe import Recipe  # noqa: E402
from llm_unlearn.rundir import RunPaths  # noqa: E402
from llm_unlearn.runio import atomic_write_json  # noqa: E402
from llm_unlearn.translation import Translator  # noqa: E402

UPSTREAM = ("corpus", "anchors", "reinforce")


def edge_rows(anchor_spans, n: int) -> list[int]:
    """Label rows (causal-LM alignment: row i + 1 holds the prediction at position i) of the anchors' edges."""
    rows = set()
    for first, last in anchor_spans:
        if first >= 1:
            rows.add(first)  # the position before the anchor predicts its first token
        if last + 1 < n:
            rows.add(last + 1)  # the anchor's last token predicts what follows it
    return sorted(rows)


def main(argv=None) -> int:
    import datasets

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="a finished run (labels stage done)")
    parser.add_argument("dest", type=Path, help="new run directory (must not exist)")
    parser.add_argument("--mode", choices=("mask", "original"), required=True)
    args = parser.parse_args(argv)
    src = RunPaths(args.source)
    if not src.labels_dataset.is_dir():
        raise SystemExit(f"error: {args.source} has no labels/dataset: finish its labels stage first")
    if args.dest.exists():
        raise SystemExit(f"error: {args.dest} exists: give a new directory (nothing is overwritten)")
    recipe = Recipe.from_yaml(src.recipe)
    model, tok = load_model(recipe.model.spec, dtype="float32")
    dictionary = AnchorDictionary.load(src.anchors)
    translator = Translator(dictionary, tok)
    blocks = read_blocks(src.blocks)
    mask = None
    if args.mode == "original":
        words = target_words(whole_corpus_texts(recipe.corpus), recipe.labels.rise_keyness)
        mask = target_token_mask(words, dictionary.keys(), tok, model.get_output_embeddings().weight.size(0),
                                 single_letters=False).bool()
    ds = datasets.load_from_disk(str(src.labels_dataset))
    label_cols = [c for c in ds.column_names if c.startswith("labels_alpha_")]
    alphas = [float(c.removeprefix("labels_alpha_")) for c in label_cols]
    changed = {"positions": 0}

    def edit(row):
        bi = row["block_index"]
        tb = translator.translate(blocks[bi], block_rng(recipe.labels.seed, bi))
        rows = [r for r in edge_rows(tb.anchor_spans, len(row["input_ids"])) if row[label_cols[0]][r] != IGNORE]
        if not rows:
            return row
        changed["positions"] += len(rows)
        if args.mode == "mask":
            for col in label_cols:
                labels = list(row[col])
                for r in rows:
                    labels[r] = IGNORE
                row[col] = labels
            return row
        with torch.no_grad():
            logits = model(torch.tensor([row["input_ids"]])).logits[0].float()
        for alpha in alphas:
            key, (ids_key, val_key) = alpha_key(alpha), soft_keys(alpha)
            labels = list(row[key])
            soft = ids_key in row
            if soft:
                sid, sval, k = [list(x) for x in row[ids_key]], [list(x) for x in row[val_key]], len(row[ids_key][0])
            for r in rows:
                v = logits[r - 1].clone()
                v[mask[: v.numel()]] = float("-inf")
                labels[r] = int(v.argmax())
                if soft:
                    vals, idx = torch.topk(v, k)
                    sid[r], sval[r] = idx.tolist(), vals.tolist()
            row[key] = labels
            if soft:
                row[ids_key], row[val_key] = sid, sval
        return row

    # Built in a sibling folder and renamed into place at the end, so a failure leaves no half-made run behind.
    args.dest.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(dir=args.dest.parent, prefix=f".{args.dest.name}.partial-"))
    try:
        dst = RunPaths(partial)
        for stage in UPSTREAM:
            shutil.copytree(src.root / stage, dst.root / stage)
        shutil.copy(src.recipe, dst.recipe)
        manifest = json.loads(src.manifest.read_text())
        manifest["stages"] = {k: v for k, v in manifest["stages"].items() if k in (*UPSTREAM, "labels")}
        atomic_write_json(dst.manifest, manifest)
        dst.labels_dir.mkdir()
        shutil.copy(src.labels_stats, dst.labels_stats)
        ds.map(edit, load_from_cache_file=False).save_to_disk(str(dst.labels_dataset))
        partial.rename(args.dest)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    print(json.dumps({"dest": str(args.dest), "mode": args.mode, "edge_positions_changed": changed["positions"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
