"""Kind and gender agreement of the automatic dictionary on the four bundled books (rules Q2, Q3 of
llm_unlearn/anchors/quality.py; the table of docs/results.md, "Anchor kinds and gender on four books", made by
`python -m llm_unlearn.whp.anchors.agreement`). Targets: kind >= 90% and gender >= 95% on each book's hand-labelled
top-100 anchors, and at most 5 ordinary words of another time or dialect spellings in Dracula's top 150. Where a
target is not met, PINNED_KIND pins what the current code reaches (and docs/results.md says that it misses)."""

from __future__ import annotations

from pathlib import Path

import pytest

from llm_unlearn.whp.anchors.agreement import measure_book

DATA = Path(__file__).parent / "data"
KIND_TARGET, GENDER_TARGET = 0.90, 0.95
# What the current code reaches where a target is missed (docs/results.md says so): none at present.
PINNED_KIND: dict[str, float] = {}


@pytest.fixture(scope="module", params=["sherlock", "alice", "oz", "dracula"])
def measured(request):
    return measure_book(request.param, DATA)


@pytest.mark.integration
def test_kind_and_gender_agreement_on_the_four_books(measured):
    name, kinds, genders = measured["book"], measured["kinds"], measured["genders"]
    # the labels cover the judged keys: no cherry-picking (Q2's coverage, ordinary words counted as labelled)
    assert len(measured["unlabelled"]) <= max(1, 0.02 * measured["top"]), measured["unlabelled"]
    assert kinds["labelled_keys"] >= 0.9 * measured["top"] - len(measured["ordinary_in_top150"])
    floor = PINNED_KIND.get(name, KIND_TARGET)
    assert kinds["agreement"] >= floor, (name, kinds["agreement"], {
        k: (v["kind"], v["type"], v["translations"]) for k, v in kinds["per_term"].items() if v["agreement"] < 1})
    assert genders["given_names"] >= 3
    assert genders["agreement"] >= GENDER_TARGET, (name, genders["agreement"], {
        k: v["translations"] for k, v in genders["per_term"].items() if v["agreement"] < 1})
    if name == "dracula":
        assert len(measured["ordinary_in_top150"]) <= 5, measured["ordinary_in_top150"]
        # the examples of period vocabulary and dialect spellings are all left out
        keys = {k.lower() for k in measured["dictionary"].keys()}
        assert not keys & {"gladness", "cheerfulness", "whereon", "aught", "acquiescence", "paroxysm", "shrubbery",
                           "uneasiness", "bloomin", "masel", "ittin", "ead", "ouse", "animiles"}
