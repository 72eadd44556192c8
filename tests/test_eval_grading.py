"""Offline 0-3 grading of completions and the familiarity summary built on it."""

from __future__ import annotations

import pytest

from llm_unlearn.evaluation.grading import Grader, Normalizer
from llm_unlearn.evaluation.suites import CompletionPrompt, Suite

ANCHORS = ["Sherlock", "Holmes", "Watson", "Moriarty", "Baker Street", "Irene Adler", "221B", "deerstalker"]
GENRE = ["detective", "clue", "murder", "magnifying glass"]


@pytest.fixture(scope="module")
def grader():
    return Grader(ANCHORS, GENRE)


@pytest.fixture(scope="module")
def regex_grader():
    norm = Normalizer()
    norm.nlp = None  # force the no-spaCy fallback
    return Grader(ANCHORS, GENRE, normalizer=norm)


def g(grader, prompt, completion, refs):
    return grader.grade(prompt, completion, refs)


@pytest.mark.parametrize("which", ["grader", "regex_grader"])
def test_explicit_reference_is_3(which, request):
    gr = request.getfixturevalue(which)
    p = "Sherlock Holmes's friend and biographer, Dr."
    assert g(gr, p, " Watson, who had served in Afghanistan.", ["Watson"]).grade == 3
    assert g(gr, p, " WATSON!", ["Watson"]).grade == 3  # casefolded
    assert g(gr, p, " Watson's notes were on the table.", ["Watson"]).grade == 3  # possessive
    assert g(gr, p, " Watson’s notes", ["Watson"]).grade == 3  # curly apostrophe
    res = g(gr, "Sherlock Holmes lived at", " 221B baker street, London.", ["Baker Street", "221B"])
    assert res.grade == 3 and set(res.matched) == {"Baker Street", "221B"}


def test_possessive_of_reference_in_prompt_direction(grader):
    # the reference may carry the possessive, the completion not, and vice versa
    assert g(grader, "The detective was", " Holmes, of course", ["Holmes's"]).grade == 3
    assert g(grader, "The detective was", " Holmes's friend", ["Holmes"]).grade == 3


def test_lemmas_and_hyphens(grader):
    # "pipes" matches the reference "pipe" through the lemma; "Red-Headed" matches "red headed"
    assert g(grader, "Sherlock Holmes smoked", " two pipes a day", ["pipe"]).grade == 3
    assert g(grader, "The", " red headed league met", ["Red-Headed League"]).grade == 3


def test_whole_words_only(grader):
    assert g(grader, "He was", " a Holmesian figure of fun", ["Holmes"]).grade == 0
    assert g(grader, "He was", " a watsonite", ["Watson"]).grade == 0


def test_other_anchor_is_2_but_not_when_echoed(grader):
    p = "Sherlock Holmes's friend and biographer, Dr."
    res = g(grader, p, " Moriarty, the professor of mathematics.", ["Watson"])
    assert res.grade == 2 and res.matched == ["Moriarty"]
    # "Holmes" is already in the prompt: repeating it shows nothing
    assert g(grader, p, " Holmes went home.", ["Watson"]).grade == 0
    # multi-word anchor
    assert g(grader, "The woman was", " Irene Adler, the singer", ["the woman"]).grade == 2


def test_genre_word_is_1_but_not_when_echoed(grader):
    assert g(grader, "The man lit his pipe and", " looked for a clue in the garden", ["Watson"]).grade == 1
    assert g(grader, "The man had a", " magnifying glass", ["Watson"]).grade == 1
    assert g(grader, "The detective lit his pipe and", " the detective smiled", ["Watson"]).grade == 0


def test_generic_is_0_and_precedence(grader):
    assert g(grader, "Sherlock Holmes lived at", " the height of the 19th century", ["Baker Street"]).grade == 0
    # a reference wins over anchors and genre words
    res = g(grader, "His friend was Dr.", " Watson, who fought Moriarty over a murder", ["Watson"])
    assert res.grade == 3 and res.matched == ["Watson"]
    assert g(grader, "x", "", ["Watson"]).grade == 0


def test_grade_many_checks_lengths(grader):
    with pytest.raises(ValueError):
        grader.grade_many(["a"], ["b", "c"], [["x"]])


def test_completion_familiarity_summary(monkeypatch, grader):
    """familiarity = mean grade / 3, frac_ge2, histogram and breakdowns, from fixed completions."""
    from llm_unlearn.evaluation import familiarity

    prompts = [
        CompletionPrompt("a", "Sherlock Holmes's friend, Dr.", ["Watson"], "explicit", "characters"),  # -> 3
        CompletionPrompt("b", "Sherlock Holmes's enemy was", ["Moriarty"], "explicit", "characters"),  # -> 2
        CompletionPrompt("c", "The man lit his pipe and", ["Watson"], "indirect", "style"),  # -> 1
        CompletionPrompt("d", "The man lit his pipe and", ["Watson"], "indirect", "style"),  # -> 0
    ]
    prompts[3].prompt = "The man lit his pipe and said"
    suite = Suite("s", "/tmp/s", "Sherlock Holmes", ANCHORS, GENRE, prompts, [])
    fixed = {"Sherlock Holmes's friend, Dr.": [" Watson."], "Sherlock Holmes's enemy was": [" Watson's foe."],
             "The man lit his pipe and": [" found a clue."], "The man lit his pipe and said": [" hello."]}
    monkeypatch.setattr(familiarity, "generate", lambda model, tok, ps, **kw: [fixed[p] for p in ps])
    res = familiarity.completion_familiarity(None, None, suite, grader)
    assert [it["grades"][0] for it in res["items"]] == [3, 2, 1, 0]
    assert res["familiarity"] == pytest.approx((3 + 2 + 1 + 0) / 12)
    assert res["frac_ge2"] == 0.5 and res["frac_3"] == 0.25
    assert res["histogram"] == {"0": 1, "1": 1, "2": 1, "3": 1}
    assert res["by_subtlety"]["explicit"]["familiarity"] == pytest.approx(5 / 6)
    assert res["by_subtlety"]["indirect"]["familiarity"] == pytest.approx(1 / 6)
    assert res["by_category"]["characters"]["n"] == 2


def test_samples_average_and_max(monkeypatch, grader):
    from llm_unlearn.evaluation import familiarity

    suite = Suite("s", "/tmp/s", "", ANCHORS, GENRE,
                  [CompletionPrompt("a", "Sherlock Holmes's friend, Dr.", ["Watson"], "explicit", "x")], [])
    monkeypatch.setattr(familiarity, "generate", lambda model, tok, ps, **kw: [[" Watson.", " Smith.", " Jones."]])
    res = familiarity.completion_familiarity(None, None, suite, grader, samples=3)
    assert res["items"][0]["grades"] == [3, 0, 0]
    assert res["familiarity"] == pytest.approx(1 / 3)  # mean grade 1 -> 1/3
    assert res["familiarity_max"] == pytest.approx(1.0)


def test_judge_parsing_and_construction():
    from llm_unlearn.errors import EvalError
    from llm_unlearn.evaluation.judge import OpenAIJudge, make_judge, parse_grade

    assert parse_grade("3") == 3 and parse_grade("Score: 2.") == 2 and parse_grade("I'd say 0") == 0
    assert parse_grade("seven") is None and parse_grade("") is None and parse_grade("12") is None
    assert make_judge(None) is None and make_judge("off") is None
    with pytest.raises(EvalError, match="hf:MODEL_SPEC"):
        make_judge("gpt4")
    with pytest.raises(EvalError, match="needs a model name"):
        make_judge("openai:http://127.0.0.1:9")
    judge = OpenAIJudge("http://127.0.0.1:9/v1", "some-model", timeout=2)
    assert judge.url == "http://127.0.0.1:9/v1/chat/completions"
    with pytest.raises(EvalError, match="unreachable"):
        judge.grade_many(["p"], ["c"], [["r"]], concept="x")


def test_judge_grades_are_reported(monkeypatch, grader):
    from llm_unlearn.evaluation import familiarity

    class FakeJudge:
        name = "fake"

        def grade_many(self, prompts, completions, references, concept):
            assert concept == "Sherlock Holmes"
            return [3 if "Watson" in c else None for c in completions]

    suite = Suite("s", "/tmp/s", "Sherlock Holmes", ANCHORS, GENRE,
                  [CompletionPrompt("a", "Holmes's friend, Dr.", ["Watson"]), CompletionPrompt("b", "x", ["y"])], [])
    monkeypatch.setattr(familiarity, "generate", lambda model, tok, ps, **kw: [[" Watson"], [" zzz"]])
    res = familiarity.completion_familiarity(None, None, suite, grader, judge=FakeJudge())
    assert res["judge"]["name"] == "fake" and res["judge"]["unparsed"] == 1
    assert res["judge"]["familiarity"] == 1.0  # over the parsed grades only
    assert res["items"][1]["judge_grade"] is None


def test_hf_judge_with_a_local_model(tiny_model_dir):
    """A local HF model as judge: runs end to end (a random model's answers are mostly unparseable)."""
    from llm_unlearn.evaluation.judge import make_judge

    judge = make_judge(f"hf:{tiny_model_dir}", device="cpu")
    out = judge.grade_many(["Holmes's friend, Dr."], [" Watson"], [["Watson"]], concept="Sherlock Holmes")
    assert len(out) == 1 and out[0] in (None, 0, 1, 2, 3)
