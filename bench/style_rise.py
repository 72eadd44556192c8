"""Where WHP's collateral damage comes from (docs/results.md, session 7): the reinforced model's rise, and how far an
unlearned model moved on other text.

    python bench/style_rise.py --run runs/demo_merged [--text llm_unlearn/data/corpora/alice_in_wonderland.txt]

Prints one JSON object:
- ``rise``: per probability suite (Sherlock, control), the reinforced model's logit rise at the answer's first token
  (mean, median) and the largest rise of any token at the same position (mean): ``v_r - v_b`` of the labels stage,
  with the run's reinforced adapter on the base model;
- ``kl``: mean KL(base || unlearned) per token over the first 8 blocks of 256 tokens of each text (the run's
  evaluation text, WikiText-2 test, and the given fiction), at all positions and at name positions (rule G1 of llm_unlearn.retain).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llm_unlearn.corpus import load_blocks  # noqa: E402
from llm_unlearn.models import load_model  # noqa: E402
from llm_unlearn.retain import NamePositions  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def answer_rise(model, tokenizer, suite: Path) -> dict:
    rows = [json.loads(line) for line in (suite / "probability.jsonl").read_text().splitlines() if line.strip()]
    at_answer, largest = [], []
    for r in rows:
        ids = tokenizer(r["prompt"], return_tensors="pt")["input_ids"]
        first = tokenizer(r["target"], add_special_tokens=False)["input_ids"][0]
        with torch.no_grad():
            v_r = model(ids).logits[0, -1].float()
            with model.disable_adapter():
                v_b = model(ids).logits[0, -1].float()
        rise = v_r - v_b
        at_answer.append(float(rise[first]))
        largest.append(float(rise.relu().max()))
    return {"prompts": len(rows), "mean_rise_at_answer": statistics.mean(at_answer),
            "median_rise_at_answer": statistics.median(at_answer), "mean_largest_rise": statistics.mean(largest)}


def moved(base, unlearned, tokenizer, path: str) -> dict:
    blocks = load_blocks(path, tokenizer, block_size=256, max_blocks=8)
    ids = torch.tensor([b.input_ids for b in blocks])
    names = NamePositions(tokenizer)(ids, torch.ones_like(ids))
    with torch.no_grad():
        log_b = torch.log_softmax(base(ids).logits.float(), -1)
        log_u = torch.log_softmax(unlearned(ids).logits.float(), -1)
    kl = (log_b.exp() * (log_b - log_u)).sum(-1)
    return {"tokens": int(kl.numel()), "kl_all": float(kl.mean()), "kl_name_positions": float(kl[names].mean()),
            "kl_other_positions": float(kl[~names].mean()), "name_fraction": float(names.float().mean())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", required=True, help="a finished WHP run (its reinforce/adapter and export/model)")
    ap.add_argument("--text", default=str(REPO.parent / "shared" / "data" / "corpora" / "alice_in_wonderland.txt"),
                    help="other fiction to measure the unlearned model's movement on")
    args = ap.parse_args(argv)
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    run = Path(args.run)
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    base, tokenizer = load_model(recipe["model"]["spec"], dtype=torch.float32)
    unlearned = AutoModelForCausalLM.from_pretrained(run / "export" / "model", dtype=torch.float32).eval()
    out = {"run": str(run), "kl": {"wikitext2_test": moved(base, unlearned, tokenizer, recipe["eval"]["wikitext"]),
                                   Path(args.text).stem: moved(base, unlearned, tokenizer, args.text)}}
    reinforced = PeftModel.from_pretrained(base, run / "reinforce" / "adapter").eval()
    out["rise"] = {s: answer_rise(reinforced, tokenizer, REPO / "eval" / s) for s in ("sherlock_holmes", "control")}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
