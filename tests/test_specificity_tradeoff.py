"""bench/specificity_tradeoff.py: each run's unlearned model as % of its own base, the table and the plot."""

from __future__ import annotations

import json
import sys

import pytest
from conftest import REPO

sys.path.insert(0, str(REPO))
from bench.specificity_tradeoff import main  # noqa: E402


def _model(fam: float, ge2: float, prob: float, ctl_fam: float, ctl_prob: float, ppl: float) -> dict:
    return {"suites": {"sherlock_holmes": {"completion": {"n": 60, "familiarity": fam, "frac_ge2": ge2},
                                           "probability": {"n": 20, "mean_prob": prob, "frac_first_top1": 0.1}},
                       "control": {"completion": {"n": 80, "familiarity": ctl_fam, "frac_ge2": 0.5},
                                   "probability": {"n": 40, "mean_prob": ctl_prob, "frac_first_top1": 0.3}}},
            "perplexity": {"wikitext": {"token_perplexity": ppl}}}


def _run(tmp_path, name: str, unlearned: dict):
    run = tmp_path / name
    (run / "eval").mkdir(parents=True)
    doc = {"models": {"base": _model(0.2, 0.2, 0.1, 0.5, 0.4, 20.0), "unlearned": unlearned}}
    (run / "eval" / "eval.json").write_text(json.dumps(doc))
    return run


def test_points_are_shares_of_each_runs_own_base(tmp_path, capsys):
    a = _run(tmp_path, "a", _model(0.09, 0.1, 0.02, 0.45, 0.38, 21.0))
    b = _run(tmp_path, "b", _model(0.12, 0.1, 0.025, 0.49, 0.4, 20.2))
    out = tmp_path / "img" / "tradeoff.png"
    assert main([f"paper={a}", f"target tokens={b}", "--out", str(out)]) == 0
    data = json.loads(out.with_suffix(".json").read_text())
    paper = data["runs"]["paper"]
    assert paper["target familiarity"] == 45.0 and paper["target P"] == 20.0
    assert paper["control familiarity"] == 90.0 and paper["control P"] == 95.0 and paper["WikiText-2 ppl"] == 5.0
    assert data["runs"]["target tokens"]["target familiarity"] == 60.0 and data["runs"]["target tokens"]["dir"] == str(b)
    assert out.stat().st_size > 1000 and "| paper | 45 | 50 | 20 | 90 | 95 | 5 |" in out.with_suffix(".md").read_text()


def test_unfinished_runs_and_bad_arguments_say_what_to_do(tmp_path):
    with pytest.raises(SystemExit, match="finish the run's eval stage"):
        main([f"x={tmp_path / 'missing'}", "--out", str(tmp_path / "p.png")])
    lacking = _run(tmp_path, "c", _model(0.1, 0.1, 0.02, 0.4, 0.3, 21.0))
    with pytest.raises(SystemExit, match="evaluate the suites alice_wonderland and control"):
        main([f"x={lacking}", "--target", "alice_wonderland", "--out", str(tmp_path / "p.png")])
    with pytest.raises(SystemExit):  # argparse: exit code 2
        main([str(lacking), "--out", str(tmp_path / "p.png")])
