"""Prompt suites: the shipped Sherlock Holmes and control suites, validation errors, and drafting."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from llm_unlearn.errors import EvalError
from llm_unlearn.evaluation.suites import draft_suite, load_suite, read_anchor_terms

REPO = Path(__file__).resolve().parents[1]


def test_sherlock_suite_shape():
    s = load_suite(REPO / "eval" / "sherlock_holmes")
    assert s.name == "sherlock_holmes" and s.concept == "Sherlock Holmes"
    assert len(s.completion) >= 150 and len(s.probability) >= 40
    cats = Counter(p.category for p in s.completion)
    assert {"characters", "places", "objects", "plots", "style"} <= set(cats)
    assert all(n >= 20 for n in cats.values())
    subtle = Counter(p.subtlety for p in s.completion)
    assert set(subtle) == {"explicit", "partial", "indirect"} and subtle["indirect"] >= 30
    assert all(p.target.startswith(" ") for p in s.probability), "targets carry their leading space"
    assert all(not p.prompt.endswith(" ") for p in s.completion + s.probability), "no trailing spaces in prompts"
    assert len({p.prompt for p in s.completion}) == len(s.completion)
    assert "Watson" in s.anchors and "detective" in s.genre_terms


def test_control_suite_shape():
    s = load_suite(REPO / "eval" / "control")
    cats = Counter(p.category for p in s.completion)
    assert {"other_detectives", "victorian_london", "other_novels", "general"} <= set(cats)
    assert len(s.completion) >= 100 and len(s.probability) >= 40
    # the control suite must not test the target itself
    for p in s.completion:
        assert "Holmes" not in p.prompt and "Holmes" not in " ".join(p.references)


def _write(folder: Path, completion=None, probability=None, meta=None):
    folder.mkdir(parents=True, exist_ok=True)
    if completion is not None:
        (folder / "completion.jsonl").write_text("\n".join(completion) + "\n", encoding="utf-8")
    if probability is not None:
        (folder / "probability.jsonl").write_text("\n".join(probability) + "\n", encoding="utf-8")
    if meta is not None:
        (folder / "suite.yaml").write_text(meta, encoding="utf-8")
    return folder


def test_minimal_suite_defaults(tmp_path):
    folder = _write(tmp_path / "mine", completion=[
        json.dumps({"prompt": "Zorro's horse was", "references": ["Tornado"]}),
        json.dumps({"prompt": "Zorro lived in", "references": ["California", "Los Angeles"], "subtlety": 3}),
    ])
    s = load_suite(folder)
    assert s.name == "mine" and not s.probability
    assert s.completion[0].subtlety == "explicit" and s.completion[1].subtlety == "indirect"
    assert s.anchors == ["California", "Los Angeles", "Tornado"]  # default: every reference
    assert [p.id for p in s.completion] == ["c0001", "c0002"]


@pytest.mark.parametrize("lines, message", [
    (["{not json"], "completion.jsonl:1: not valid JSON"),
    ([json.dumps({"prompt": "x"})], "'references' must be a non-empty list"),
    ([json.dumps({"prompt": "", "references": ["a"]})], "'prompt' must be a non-empty string"),
    ([json.dumps({"prompt": "x", "references": ["a"], "subtlety": "obvious"})], "subtlety must be one of"),
    ([json.dumps({"id": "a", "prompt": "x", "references": ["a"]}),
      json.dumps({"id": "a", "prompt": "y", "references": ["a"]})], "duplicate id"),
    (["[1, 2]"], "must be a JSON object"),
])
def test_bad_completion_lines(tmp_path, lines, message):
    folder = _write(tmp_path / "bad", completion=lines)
    with pytest.raises(EvalError, match=message.replace("(", r"\(").replace("[", r"\[")):
        load_suite(folder)


def test_bad_probability_and_missing(tmp_path):
    with pytest.raises(EvalError, match="'target' must be a non-empty string"):
        load_suite(_write(tmp_path / "p", probability=[json.dumps({"prompt": "x", "target": ""})]))
    with pytest.raises(EvalError, match="prompt suite not found"):
        load_suite(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EvalError, match="no completion.jsonl or probability.jsonl"):
        load_suite(tmp_path / "empty")
    with pytest.raises(EvalError, match="unknown keys"):
        load_suite(_write(tmp_path / "m", probability=[json.dumps({"prompt": "x", "target": " y"})],
                          meta="name: m\nanchorz: [a]\n"))


def test_read_anchor_terms_formats(tmp_path):
    (tmp_path / "a.yaml").write_text("- Holmes\n- Watson\n- Holmes\n")
    (tmp_path / "b.yaml").write_text("Holmes: [Jones]\nWatson: [Smith]\nvetoed: null\n")
    (tmp_path / "c.json").write_text(json.dumps({"anchors": ["Baker Street"]}))
    assert read_anchor_terms(tmp_path / "a.yaml") == ["Holmes", "Watson"]
    assert read_anchor_terms(tmp_path / "b.yaml") == ["Holmes", "Watson"]
    assert read_anchor_terms(tmp_path / "c.json") == ["Baker Street"]
    with pytest.raises(EvalError, match="anchors file not found"):
        read_anchor_terms(tmp_path / "missing.yaml")


def test_draft_suite_from_corpus(tmp_path):
    corpus = tmp_path / "book.txt"
    corpus.write_text(
        "It was a cold morning in the city when the detective Zorblax arrived at the station. "
        "Everyone in the crowded little town had heard about the famous Zorblax and his friend Quimby. "
        "The old clockmaker on the corner said that Quimby was late again.\n\n"
        "Nobody in the whole village could explain why the great Zorblax had left his violin behind. "
        "At the end of the long and tiring day the two friends returned to Fennel Lane together.\n",
        encoding="utf-8")
    anchors = tmp_path / "anchors.yaml"
    anchors.write_text("- Zorblax\n- Quimby\n- Fennel Lane\n")
    out = tmp_path / "zorblax"
    suite = draft_suite(corpus, anchors, out, n_completion=10, n_probability=4, per_anchor=2)
    assert suite.name == "zorblax" and suite.completion
    for p in suite.completion:
        assert p.references[0] in ("Zorblax", "Quimby", "Fennel Lane")
        assert not p.prompt.endswith(p.references[0])
    assert (out / "README.md").read_text().startswith("# zorblax (draft prompt suite)")
    with pytest.raises(EvalError, match="exists and is not empty"):
        draft_suite(corpus, anchors, out)


def test_draft_suite_on_real_corpus(tmp_path, sherlock_path):
    anchors = tmp_path / "anchors.yaml"
    anchors.write_text("- Holmes\n- Watson\n- Baker Street\n- Lestrade\n- Irene Adler\n")
    suite = draft_suite(sherlock_path, anchors, tmp_path / "draft", n_completion=20, n_probability=10)
    assert len(suite.completion) == 20 and len(suite.probability) == 10
    assert {p.references[0] for p in suite.completion} >= {"Holmes", "Watson", "Lestrade"}
    assert len({p.prompt for p in suite.completion} & {p.prompt for p in suite.probability}) == 0
