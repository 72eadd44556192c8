"""bench/attack_plot.py: attack rows of several models read from their attack.json files, bad input as exit 2."""

from __future__ import annotations

import json

import pytest

from bench import attack_plot


def _result(attack, variant, suite, fam, prob):
    return {"attack": attack, "variant": variant, "suite": suite, "kind": "same_items",
            "recovery": {"familiarity": {"n": 10, "recovery": fam, "ci_low": fam - 0.1, "ci_high": fam + 0.2},
                         "prob": {"n": 5, "recovery": prob, "ci_low": prob - 0.1, "ci_high": prob + 0.1}}}


def _attack_dir(tmp_path, name, results):
    folder = tmp_path / name
    folder.mkdir()
    plain = {"attack": "none", "variant": "plain", "suite": "sherlock_holmes", "kind": "same_items", "recovery": {}}
    (folder / "attack.json").write_text(json.dumps({"schema": "llm-unlearn-attack/1", "results": [plain, *results]}))
    return folder


def test_rows_of_the_suite_are_collected_per_setting_and_plotted(tmp_path):
    a = _attack_dir(tmp_path, "a", [_result("relearn", "heldout-20", "sherlock_holmes", 0.3, 0.1),
                                    _result("relearn", "heldout-20", "control", 0.9, 0.9),
                                    _result("quantization", "gguf Q4_1 (base file)", "sherlock_holmes", 1.0, 0.95)])
    b = _attack_dir(tmp_path, "b", [_result("in_context", "k=3", "sherlock_holmes", 0.4, 0.2)])
    c = _attack_dir(tmp_path, "c", [_result("relearn", "heldout-20", "sherlock_holmes", 0.05, 0.0)])
    data = attack_plot.collect([("lora", [a, b]), ("grid", [c])], "sherlock_holmes")
    assert set(data["lora"]) == {"relearn heldout-20", "quantization gguf Q4_1 (base file)", "in_context k=3"}
    assert data["lora"]["relearn heldout-20"]["familiarity"]["recovery"] == 0.3  # not the control suite's 0.9
    assert data["grid"] == {"relearn heldout-20": {"familiarity": {"recovery": 0.05, "ci_low": pytest.approx(-0.05),
                                                                   "ci_high": pytest.approx(0.25), "n": 10},
                                                   "prob": {"recovery": 0.0, "ci_low": -0.1, "ci_high": 0.1, "n": 5}}}
    out = tmp_path / "img" / "plot.png"
    assert attack_plot.main(["--setting", f"lora={a},{b}", "--setting", f"grid={c}", "--out", str(out),
                             "--json", str(tmp_path / "plot.json")]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "plot.json").read_text())["grid"]["relearn heldout-20"]["prob"]["n"] == 5


def test_bad_settings_exit_2_with_what_to_fix(tmp_path, capsys):
    a = _attack_dir(tmp_path, "a", [_result("relearn", "heldout-20", "sherlock_holmes", 0.3, 0.1)])
    out = tmp_path / "plot.png"
    assert attack_plot.main(["--setting", str(a), "--out", str(out)]) == 2
    assert "LABEL=DIR" in capsys.readouterr().err
    assert attack_plot.main(["--setting", f"x={tmp_path / 'missing'}", "--out", str(out)]) == 2
    assert "finished `llm-unlearn attack`" in capsys.readouterr().err
    assert attack_plot.main(["--setting", f"x={a},{a}", "--out", str(out)]) == 2  # one attack twice: not guessed
    assert "give each attack once" in capsys.readouterr().err
    assert attack_plot.main(["--setting", f"x={a}", "--suite", "control", "--out", str(out)]) == 2
    assert "no attack rows for suite 'control'" in capsys.readouterr().err
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "attack.json").write_text(json.dumps({"schema": "something/1"}))
    assert attack_plot.main(["--setting", f"x={tmp_path / 'other'}", "--out", str(out)]) == 2
    assert "not an llm-unlearn attack result" in capsys.readouterr().err
    assert not out.exists()
