#!/usr/bin/env python
"""Where a run's labels teach the model something (issue #16): the labels' move away from the base model, by position.

    python bench/label_signal.py --run runs/sherlock_smollm2 --alpha 10 --blocks 16    # about 30 s on 2 cores

For the first BLOCKS blocks of a finished run (corpus, anchors and reinforce stages), rebuilt exactly as the labels
stage builds them (translation seed, formula, suppression, with the recipe's labels.rise_* settings ignored: the
paper's formula), at every supervised position:

- ``KL(generic || base on the original text)``: how far the generic distribution is from what the base model
  predicts on the text the fine-tune trains on, i.e. what the fine-tune teaches there;
- ``KL(base on translated || base on original)``: the translation's own share (no ReLU term);
- how often the argmax changes.

Positions are grouped by where they stand: predicting an anchor's first token, at an anchor's last token
(predicting what follows it), 1-8, 9-32 and more than 32 tokens after the last anchor. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llm_unlearn.anchors import AnchorDictionary  # noqa: E402
from llm_unlearn.corpus import read_blocks  # noqa: E402
from llm_unlearn.labels import apply_suppression, block_rng, generic_logits  # noqa: E402
from llm_unlearn.models import load_model  # noqa: E402
from llm_unlearn.recipe import Recipe  # noqa: E402
from llm_unlearn.rundir import RunPaths  # noqa: E402
from llm_unlearn.translation import Translator  # noqa: E402

GROUPS = ("predicts an anchor", "anchor's last token", "1-8 after", "9-32 after", "more than 32 after")


def group_of(i: int, starts: set[int], last_end: int | None) -> str:
    """The group of original position ``i`` (whose logits predict token i + 1)."""
    if i + 1 in starts:
        return GROUPS[0]
    if last_end is None:
        return GROUPS[4]
    d = i - last_end
    return GROUPS[1] if d == 0 else GROUPS[2] if d <= 8 else GROUPS[3] if d <= 32 else GROUPS[4]


def kl(logp: torch.Tensor, logq: torch.Tensor) -> float:
    """KL(p || q) from log-probabilities; tokens with p = 0 (suppressed) contribute nothing."""
    p = logp.exp()
    return float(torch.where(p > 0, p * (logp - logq), torch.zeros_like(p)).sum())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, type=Path)
    parser.add_argument("--alpha", type=float, default=10.0)
    parser.add_argument("--blocks", type=int, default=16)
    args = parser.parse_args(argv)
    from peft import PeftModel

    run = RunPaths(args.run)
    if not (run.reinforce_weights.is_dir() and run.anchors.is_file()):
        raise SystemExit(f"error: {args.run} has no reinforce/adapter or anchors/anchors.yaml: give a run whose "
                         "reinforce stage has finished")
    recipe = Recipe.from_yaml(run.recipe)
    model, tok = load_model(recipe.model.spec, dtype="float32")
    pm = PeftModel.from_pretrained(model, run.reinforce_weights).eval()
    translator = Translator(AnchorDictionary.load(run.anchors), tok)
    acc = {g: {"positions": 0, "kl_generic_vs_original": 0.0, "kl_translated_vs_original": 0.0, "argmax_changed": 0}
           for g in GROUPS}
    for bi, block in enumerate(read_blocks(run.blocks)[:args.blocks]):
        tb = translator.translate(block, block_rng(recipe.labels.seed, bi))
        with torch.no_grad():
            with pm.disable_adapter():
                orig = pm(torch.tensor([block.input_ids])).logits[0].float()
                trans = pm(torch.tensor([tb.translated_ids])).logits[0].float()
            reinf = pm(torch.tensor([block.input_ids])).logits[0].float()
        mapping, reason = np.asarray(tb.mapping), np.asarray(tb.mask_reason)
        starts = {first for first, _ in tb.anchor_spans}
        ends = {last for _, last in tb.anchor_spans}
        last_end = None
        for i in range(len(block.input_ids) - 1):
            if i in ends:
                last_end = i
            if mapping[i] < 0 or reason[i] != 0:
                continue
            v = generic_logits(trans[mapping[i]], reinf[i], args.alpha).unsqueeze(0)
            if recipe.labels.suppress_used_translations:
                apply_suppression(v, np.array([mapping[i]]), tb.suppress_from)
            lg, lo, lt = (torch.log_softmax(x, -1) for x in (v[0], orig[i], trans[mapping[i]]))
            a = acc[group_of(i, starts, last_end)]
            a["positions"] += 1
            a["kl_generic_vs_original"] += kl(lg, lo)
            a["kl_translated_vs_original"] += kl(lt, lo)
            a["argmax_changed"] += int(v[0].argmax() != orig[i].argmax())
    total = sum(a["kl_generic_vs_original"] for a in acc.values()) or 1.0
    out = {"run": str(args.run), "alpha": args.alpha, "blocks": args.blocks, "groups": {}}
    for g, a in acc.items():
        n = max(a["positions"], 1)
        out["groups"][g] = {"positions": a["positions"],
                            "mean_kl_generic_vs_original": round(a["kl_generic_vs_original"] / n, 3),
                            "share_of_total_kl": round(a["kl_generic_vs_original"] / total, 3),
                            "mean_kl_translated_vs_original": round(a["kl_translated_vs_original"] / n, 3),
                            "argmax_changed": round(a["argmax_changed"] / n, 3)}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
