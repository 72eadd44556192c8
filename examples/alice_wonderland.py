"""A second concept end to end through the Python API: unlearn "Alice's Adventures in Wonderland" from
SmolLM2-135M-Instruct with the Sherlock demo's settings, scored on the Alice suite (the target) and on the Sherlock
Holmes and control suites (the neighbours that must be kept).

    python examples/alice_wonderland.py --out runs/alice            # 15 min 36 s on 2 idle CPU cores
    python examples/alice_wonderland.py --out runs/alice_lr1e3 --set finetune.learning_rate=0.001

(the second forgets more: Alice P(target) 32% of base with the Sherlock and control suites at 96-105%;
docs/results.md, "A second concept: Alice in Wonderland")

Nothing here is Alice-specific beyond the corpus, the target's name and the suite: the anchored terms and their
substitutes are found automatically (the base model proposes the substitutes, which fit Alice's animals and objects
better than Faker's names: docs/results.md, "Anchors: kinds, gender and substitutes").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from llm_unlearn import unlearn
from llm_unlearn.config.datadir import data_dir
from llm_unlearn.errors import UnlearnError

REPO = Path(__file__).resolve().parents[1]
DATA = data_dir()  # the bundled data folder, or $LLM_UNLEARN_DATA
RECIPE = REPO / "recipes" / "sherlock_smollm2.yaml"
TARGET = "Alice's Adventures in Wonderland"


def alice_overrides(extra: list[str] = ()) -> dict:
    """The demo recipe's settings with Alice's corpus and suites: no Holmes articles or dictionary."""
    overrides = {
        "corpus.extra_paths": [],
        "anchors.user_dictionary": None,
        "anchors.substitutes": "model",
        "eval.suites": [str(REPO / "eval" / name) for name in ("alice_wonderland", "sherlock_holmes", "control")],
    }
    for item in extra:
        key, _, value = item.partition("=")
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/alice", help="run directory")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--corpus", default=str(DATA / "corpora" / "alice_in_wonderland.txt"))
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a recipe field (repeatable)")
    args = parser.parse_args(argv)
    try:
        result = unlearn(model=args.model, corpus=args.corpus, out=args.out, recipe=RECIPE, target=TARGET,
                         overrides=alice_overrides(args.set))
    except UnlearnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"unlearned model: {result.model_path}\nreport: {Path(result.run_dir) / 'eval' / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
