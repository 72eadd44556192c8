#!/usr/bin/env python
"""Re-pair the relearn rows of a finished attack under rule ATK-RL4, without running any model.

    python bench/rescore_relearn.py runs/attack_qa_mlp --heldout runs/holmes_gap.txt

`attack.json` keeps every model's per-item scores. This keeps, in each relearn row, the items whose answer the
relearn text does not name (``llm_unlearn.attacks.scoring.without_copied``, as ``llm-unlearn attack`` now does
before scoring) and recomputes recovery with the attack's own pairing (``pair_rows``). Scoring fewer items changes
no item's score, so the result is what the current attack prints for the same models and relearn text.
Prints one line per relearn row and suite; ``--json FILE`` writes the re-paired rows.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from llm_unlearn.attacks.base import Row
from llm_unlearn.attacks.runner import pair_rows
from llm_unlearn.attacks.scoring import without_copied
from llm_unlearn.config import AttackConfig
from llm_unlearn.evaluation.suites import load_suite


def _keep(measure: dict, keep: dict[str, set]) -> dict:
    out = {**measure, "items": {}}
    for key, part in (measure.get("items") or {}).items():
        pairs = [(i, v) for i, v in zip(part["ids"], part["values"], strict=True) if i in keep[key]]
        out["items"][key] = {"ids": [p[0] for p in pairs], "values": [p[1] for p in pairs]}
        out[key] = sum(p[1] for p in pairs) / len(pairs) if pairs else None
    return out


def rescore(doc: dict, text: str) -> list[dict]:
    suites = {s["name"]: load_suite(s["path"]) for s in doc["suites"]}
    keep, left = {}, {}
    for name, suite in suites.items():
        kept, left[name] = without_copied(suite, lambda kind, pid: text)
        keep[name] = {"familiarity": {p.id for p in kept.completion}, "prob": {p.id for p in kept.probability}}
    rows, plain = [], {}
    for r in doc["rows"]:
        row = Row(**r)
        if row.attack == "relearn":
            row.measure = _keep(row.measure, keep[row.suite])
            row.info = {**row.info, "left_out": left[row.suite]}
        if row.attack == "none":
            plain.setdefault(row.suite, {})[row.model] = row.measure
        rows.append(row)
    cfg = AttackConfig(bootstrap=doc["config"]["bootstrap"], seed=doc["config"]["seed"])
    return [e for e in pair_rows(rows, plain, cfg) if e["attack"] == "relearn"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("attack_dir", help="an `llm-unlearn attack --out` folder (its attack.json)")
    ap.add_argument("--heldout", required=True, help="the relearn text the attack used (--heldout FILE)")
    ap.add_argument("--json", help="write the re-paired relearn rows here")
    args = ap.parse_args()
    doc = json.loads((Path(args.attack_dir) / "attack.json").read_text())
    entries = rescore(doc, Path(args.heldout).read_text(encoding="utf-8"))
    for e in entries:
        cells = []
        for key in ("familiarity", "prob"):
            rc = e["recovery"].get(key) or {}
            if rc.get("recovery") is None:
                continue
            cells.append(f"{key} {rc['recovery']:+.2f} [{rc.get('ci_low', float('nan')):+.2f}, "
                         f"{rc.get('ci_high', float('nan')):+.2f}] on {rc['n']} items, vs relearned base "
                         f"{rc.get('recovery_vs_control', float('nan')):+.2f}")
        left = e["info"].get("left_out") or {}
        print(f"{args.attack_dir} {e['variant']} {e['suite']}: " + "; ".join(cells)
              + f" (left out: {left.get('completion')} completion, {left.get('probability')} probability)")
    if args.json:
        Path(args.json).write_text(json.dumps(entries, indent=1))


if __name__ == "__main__":
    main()
