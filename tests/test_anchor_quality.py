"""Issue 16: anchors that generalise to any concept. The base model's substitutes (rules P1-P7 of
llm_unlearn/anchors/proposals.py), the ordinary-word and punctuation rules (O1, O2, N1 of llm_unlearn/anchors),
the dictionary quality measures (Q1, Q2 of llm_unlearn/anchors/quality.py) and the position weights (W1-W4 of
llm_unlearn/labels.py)."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import pytest
import torch
from conftest import ChatServer, write_yaml

from llm_unlearn.config import AnchorsConfig
from llm_unlearn.errors import AnchorError, RecipeError
from llm_unlearn.whp.anchors import (
    AnchorDictionary,
    Candidate,
    faker_lists,
    has_letters,
    make_translations,
    name_parts,
    ordinary_capitalised,
    ordinary_word,
    score_candidates,
)
from llm_unlearn.whp.anchors.extraction import _Stats
from llm_unlearn.whp.anchors.proposals import _not_target, _shape_ok, _whole_words, find_contexts, propose_substitutes
from llm_unlearn.whp.anchors.quality import (
    kind_agreement,
    load_kind_labels,
    perplexity_ratio,
    substitute_kind,
)

DATA = Path(__file__).parent / "data"

STORY = ("The Zorblax sat in the garden. Then the Zorblax ran to the house of Quimby Fenn. "
         "Everyone said the Zorblax was clever, and Quimby Fenn agreed with the Zorblax. "
         "A little wuzzlet sang near the window while the wuzzlet ate.\n\n") * 4


# ---- rule N1: punctuation and numbers are never anchors ------------------------------------------------------
def test_punctuation_and_numbers_never_become_anchors():
    assert not has_letters("-") and not has_letters("1984") and not has_letters("Ron - Harry")
    assert has_letters("St. Clair") and has_letters("O'Brien")
    st = _Stats(total_words=50_000)
    for text, label in (("-", "PERSON"), ("1984", ""), ("Harry - Ron", "PERSON"), ("Zorblax", "PERSON"),
                        ("42nd", "")):
        st.mentions[text] += 40
        st.surface[text][text] += 40
        st.labels[text][label] += 40
        st.cap_mid[text] += 40
    st.role_first["Harry"] += 40
    st.role_last["Ron"] += 40
    config = AnchorsConfig(min_count=3)
    texts = {c.text for c in score_candidates(st, config)}
    assert "Zorblax" in texts
    assert not {"-", "1984", "Harry - Ron"} & texts
    # a dash inside a "full name" is never a name part of its own
    assert "-" not in name_parts(st, faker_lists())


# ---- rules O1, O2: ordinary English words are not anchors ----------------------------------------------------
@pytest.mark.parametrize("word", ["teacup", "whiskers", "shriek", "pattering", "dears", "midair", "clipboard",
                                  "archway", "passageway"])
def test_ordinary_lower_case_words(word):
    assert ordinary_word(word, 2.6)
    assert not ordinary_word(word, 0)  # 0 turns the rule off


@pytest.mark.parametrize("word", ["horcrux", "quaffle", "muggles", "glimmerstone", "wuzzlet"])
def test_invented_words_are_not_ordinary(word):
    assert not ordinary_word(word, 2.6)


def test_ordinary_capitalised_words_but_not_names():
    lists = faker_lists()
    assert ordinary_capitalised("Ministry", 4.5, lists) and ordinary_capitalised("Queen", 4.5, lists)
    for name in ("Alice", "Watson", "Holmes", "Zorblax", "Dormouse"):
        assert not ordinary_capitalised(name, 4.5, lists)
    assert not ordinary_capitalised("Ministry", 0, lists)


def test_scoring_drops_ordinary_words_unless_the_rule_is_off():
    st = _Stats(total_words=30_000)
    for word, n in (("teacup", 6), ("wuzzlet", 6), ("whiskers", 5)):
        st.noun_tags[word]["NNS" if word.endswith("s") else "NN"] += n
        st.lower[word] += n
    for word in ("Ministry", "Zorblax"):
        st.mentions[word] += 30
        st.surface[word][word] += 30
        st.labels[word]["ORG"] += 30
        st.cap_mid[word] += 30
    texts = {c.text for c in score_candidates(st, AnchorsConfig(min_count=3))}
    assert texts == {"wuzzlet", "Zorblax"}
    off = AnchorsConfig(min_count=3, ordinary_word_zipf=0, ordinary_capitalised_zipf=0)
    assert {c.text for c in score_candidates(st, off)} == {"wuzzlet", "Zorblax", "teacup", "whiskers", "Ministry"}


def test_forms_of_address_are_folded_away():
    from llm_unlearn.whp.anchors import build_anchor_dictionary

    text = ("Uncle Vernon looked at the Zorblax. Aunt Petunia said nothing, and Uncle Vernon shouted. " * 4 + "\n\n")
    d = build_anchor_dictionary([text], AnchorsConfig(min_count=2, substitutes="faker"), progress=False)
    assert "Uncle" not in d and "Aunt" not in d
    assert not any(k.startswith(("Uncle ", "Aunt ")) for k in d.keys())


# ---- the model's substitutes (rules P1-P7) -------------------------------------------------------------------
def test_shape_filters():
    stop, titles = {"the", "he", "and"}, {"mr", "mrs"}
    assert _shape_ok(["Dog"], ["Cat"], stop, titles)
    assert not _shape_ok(["dog"], ["Cat"], stop, titles)  # P4: a name for a name
    assert not _shape_ok(["Cat"], ["teacup"], stop, titles)  # a common noun for a common noun
    assert not _shape_ok(["The"], ["Cat"], stop, titles) and not _shape_ok(["Mr"], ["Cat"], stop, titles)
    assert not _shape_ok(["Red", "Fox"], ["Cat"], stop, titles)  # one word for one word
    assert _shape_ok(["Red", "Fox"], ["March", "Hare"], stop, titles)
    assert not _shape_ok(["Red"], ["March", "Hare"], stop, titles)
    assert not _shape_ok(["Dog,"], ["Cat"], stop, titles) and not _shape_ok(["R2D2"], ["Cat"], stop, titles)
    assert not _shape_ok(["Qu"], ["Cat"], stop, titles)  # a fragment, not a word
    forbidden = {"hare", "march"}
    assert _not_target("Dog", "Cat", forbidden)
    assert not _not_target("Cat", "Cat", forbidden) and not _not_target("Cats", "Cat", forbidden)  # P5
    assert not _not_target("Hare", "Rabbit", forbidden)  # a word of another anchor
    assert _whole_words(" Dormouse said", 1) == "Dormouse" and _whole_words(" Dor", 1) is None


def test_contexts_are_spread_and_start_before_the_term():
    texts = [" ".join(f"word{i} Zorblax" for i in range(50))]
    ctx = find_contexts(texts, ["Zorblax"], occurrences=5)["Zorblax"]
    assert len(ctx) == 5
    assert ctx[0][0].endswith("word0") and ctx[-1][0].endswith("word49")  # first and last occurrence (P1)
    assert all(not left.endswith(" ") and right.startswith(" word") for left, right in ctx[1:-1])


class PreferenceLM(torch.nn.Module):
    """Predicts the same next-token distribution everywhere: logits = ``preference`` (a hand-built model)."""

    def __init__(self, preference: torch.Tensor):
        super().__init__()
        self.preference = torch.nn.Parameter(preference, requires_grad=False)

    def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=False):
        logits = self.preference.expand(input_ids.shape[0], input_ids.shape[1], -1)
        return type("Out", (), {"logits": logits})()


def _ids(tokenizer, words):
    out = []
    for w in words:
        ids = tokenizer(" " + w, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1, w
        out.append(ids[0])
    return out


def test_proposer_prefers_fitting_words_and_never_the_target(smol_tokenizer):
    tok = smol_tokenizer
    pref = torch.full((len(tok),), -20.0)
    # the model "knows" the target (Zorblax's own first token, an anchor's word) and a few ordinary words
    zorb = tok(" Zorblax", add_special_tokens=False)["input_ids"][0]
    quimby = tok(" Quimby", add_special_tokens=False)["input_ids"][0]
    the, dog, king, lamp = _ids(tok, ["the", "Dog", "King", "lamp"])
    for tid, value in ((zorb, 9.0), (quimby, 8.5), (the, 8.0), (dog, 7.0), (king, 6.0), (lamp, 5.0)):
        pref[tid] = value
    lm = PreferenceLM(pref)
    keys = ["Zorblax", "wuzzlet"]
    out = propose_substitutes(lm, tok, [STORY], keys, forbidden={"zorblax", "quimby", "fenn", "wuzzlet"},
                              stop_words={"the"}, occurrences=4, context_tokens=16, top_tokens=10)
    assert [p.text for p in out["Zorblax"]][:2] == ["Dog", "King"]  # capitalised words only, best first
    assert [p.text for p in out["wuzzlet"]] == ["lamp"]  # a lower-case word for a lower-case term
    for props in out.values():
        for p in props:
            assert p.text.lower() not in {"zorblax", "quimby", "wuzzlet", "the"}
    # deterministic
    again = propose_substitutes(lm, tok, [STORY], keys, forbidden={"zorblax", "quimby", "fenn", "wuzzlet"},
                                stop_words={"the"}, occurrences=4, context_tokens=16, top_tokens=10)
    assert {k: [(p.text, p.score) for p in v] for k, v in again.items()} == \
        {k: [(p.text, p.score) for p in v] for k, v in out.items()}


def test_proposer_on_a_tiny_model_keeps_the_shape(tiny_llama):
    model, tok = tiny_llama
    keys = ["Zorblax", "Quimby Fenn", "wuzzlet"]
    forbidden = {"zorblax", "quimby", "fenn", "wuzzlet"}
    kwargs = dict(forbidden=forbidden, stop_words={"the", "a", "and"}, occurrences=4, context_tokens=24,
                  top_tokens=200, batch_size=4)
    out = propose_substitutes(model, tok, [STORY], keys, **kwargs)
    assert out.get("Zorblax") and out.get("wuzzlet")  # a random model still offers words of the right shape
    for key, props in out.items():
        for p in props:
            words = p.text.split(" ")
            assert len(words) == len(key.split(" "))
            assert words[0][:1].isupper() == key[:1].isupper() and words[-1][:1].isupper() == key[:1].isupper()
            assert not {w.lower() for w in words} & forbidden
    again = propose_substitutes(model, tok, [STORY], keys, **kwargs)
    assert {k: [p.text for p in v] for k, v in again.items()} == {k: [p.text for p in v] for k, v in out.items()}


def test_dictionary_uses_the_models_substitutes_and_faker_for_the_rest(smol_tokenizer):
    from llm_unlearn.whp.anchors import build_anchor_dictionary

    tok = smol_tokenizer
    pref = torch.full((len(tok),), -20.0)
    for tid, value in zip(_ids(tok, ["Dog", "Smith", "Tom", "Lamp", "lamp"]), (7.0, 6.0, 5.5, 5.0, 4.0),
                          strict=True):
        pref[tid] = value
    config = AnchorsConfig(min_count=2, translations_per_key=2, substitute_occurrences=4, substitutes="model")
    d = build_anchor_dictionary([STORY], config, progress=False, model=(PreferenceLM(pref), tok))
    assert d.entry("Zorblax").type == "person"
    assert d.translations("Zorblax") == ["Smith", "Tom"]  # P6: names for a person ("Dog" is no name)
    assert d.translations("wuzzlet") == ["lamp"]
    assert d.entry("Quimby Fenn").translations  # an organisation the model found nothing for: Faker
    faker = build_anchor_dictionary([STORY], AnchorsConfig(min_count=2, substitutes="faker"), progress=False,
                                    model=(PreferenceLM(pref), tok))
    assert "Dog" not in faker.translations("Zorblax")
    with pytest.raises(RecipeError, match="anchors.substitutes must be one of"):  # the section's own check
        AnchorsConfig(substitutes="gpt")


def test_model_substitutes_skip_linked_keys():
    st = _Stats(total_words=10_000)
    keys = [Candidate("Fenn", "person", 10, 100, 90, {}), Candidate("Quimby Fenn", "person", 6, 70, 90, {})]
    entries = {e.key: e.translations for e in make_translations(
        keys, st, AnchorsConfig(translations_per_key=2), proposals={"Fenn": ["Moss", "Hart"],
                                                                    "Quimby Fenn": ["Bad Idea"]})}
    assert entries["Fenn"] == ["Moss", "Hart"]
    # the full name is built from its linked part's translations, never from a proposal of its own
    assert all(t.endswith((" Moss", " Hart")) for t in entries["Quimby Fenn"])


# ---- quality measures (rules Q1, Q2) --------------------------------------------------------------------------
def test_substitute_kind_judge():
    assert substitute_kind("Mary") == "person" and substitute_kind("John Smith") == "person"
    assert substitute_kind("dog") == "thing" and substitute_kind("Lamp") == "thing"
    assert substitute_kind("Hart Street") == "place" and substitute_kind("Gonzalezstad") == "place"
    assert substitute_kind("Allen Ltd") == "organisation"


def test_kind_agreement(tmp_path):
    labels_file = tmp_path / "kinds.yaml"
    labels_file.write_text("kinds: {Cat: animal, Holmes: person, Wonderland: place, Nowhere: place}\n"
                           "not_anchors: [teacup]\n")
    labels = load_kind_labels(labels_file)
    d = AnchorDictionary.load(write_yaml(tmp_path, {"Cat": ["Moon", "Dog"], "Holmes": ["Hart"],
                                                "Wonderland": ["Alyssaville"], "teacup": ["cup"]}))
    result = kind_agreement(d, labels)
    assert result["labelled_keys"] == 3 and result["labelled_terms"] == 4
    assert result["per_term"]["Cat"]["agreement"] == 0.5  # "Moon" is a surname, "Dog" an animal
    assert result["agreement"] == pytest.approx((0.5 + 1 + 1) / 3)
    assert result["unwanted_keys"] == ["teacup"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("kinds: {Cat: beast}\n")
    with pytest.raises(AnchorError, match="unknown kind"):
        load_kind_labels(bad)



@pytest.mark.parametrize("name", ["anchor_kinds_alice.yaml", "anchor_kinds_sherlock.yaml"])
def test_hand_labelled_kind_files_load(name):
    labels = load_kind_labels(DATA / name)
    assert len(labels["kinds"]) >= 30 and labels["not_anchors"]
    assert not set(labels["kinds"]) & set(labels["not_anchors"])


def test_perplexity_ratio_on_a_tiny_model(tiny_llama):
    model, tok = tiny_llama
    d = AnchorDictionary.load(write_yaml(Path(__import__("tempfile").mkdtemp()), {"Zorblax": ["Dog"]}))
    r = perplexity_ratio(model, tok, d, [STORY, "No names here at all. " * 40], max_tokens=256, block_size=64)
    assert r["blocks"] >= 1 and r["anchor_occurrences"] >= 1
    assert r["ratio"] == pytest.approx(r["perplexity_translated"] / r["perplexity_original"], rel=1e-2)
    assert math.isfinite(r["ratio_kept"]) and r["ratio_kept"] > 0
    assert perplexity_ratio(model, tok, d, ["No names here at all. " * 40], max_tokens=256, block_size=64) == {}


# ---- position weights (rules W1-W4) ---------------------------------------------------------------------------

def test_counter_import_is_used():
    # keep the Counter import honest for _Stats fields built by hand above
    assert isinstance(_Stats().lower, Counter)



# ---- the Alice corpus (bundled) --------------------------------------------------------------------------------
def test_alice_ordinary_words_are_not_anchors_and_kinds_are_measured():
    """Issue 16 on a second book: none of the ordinary words the issue lists is an anchor (rules O1, N1); the
    hand-labelled kinds are measured (Faker substitutes here; the model's are measured by `llm-unlearn anchors`)."""
    from conftest import data_path

    from llm_unlearn.corpus import read_corpus
    from llm_unlearn.whp.anchors import build_anchor_dictionary

    path = data_path("corpora", "alice_in_wonderland.txt")
    texts = [d.text for d in read_corpus(str(path))]
    d = build_anchor_dictionary(texts, AnchorsConfig(substitutes="faker"), progress=False)
    labels = load_kind_labels(DATA / "anchor_kinds_alice.yaml")
    assert not {k.lower() for k in d.keys()} & {w.lower() for w in labels["not_anchors"]}
    assert all(has_letters(k) for k in d.keys())
    for name in ("Alice", "Gryphon", "Dormouse", "Hatter", "March Hare"):
        assert name in d
    result = kind_agreement(d, labels)
    assert result["labelled_keys"] >= 25 and result["unwanted_keys"] == []


def test_anchor_stage_records_the_quality_measures(tiny_model_dir, tmp_path):
    from llm_unlearn.whp.anchors import run_anchor_stage

    labels = tmp_path / "kinds.yaml"
    labels.write_text("kinds: {Zorblax: person, wuzzlet: animal}\nnot_anchors: [garden]\n")
    config = AnchorsConfig(min_count=2, quality_tokens=128, kind_labels=str(labels), substitute_occurrences=2,
                           substitutes="model")
    d, metrics = run_anchor_stage([STORY], config, model_spec=str(tiny_model_dir), progress=False)
    assert metrics["anchors"] == len(d) > 0 and metrics["substitutes"] == "model"
    assert metrics["perplexity"]["ratio"] > 0 and metrics["perplexity"]["tokens"] > 0
    assert metrics["kinds"]["labelled_keys"] == 2 and metrics["kinds"]["unwanted_keys"] == []
    off = AnchorsConfig(min_count=2, quality_tokens=0, substitutes="faker")
    _d, metrics = run_anchor_stage([STORY], off, model_spec=str(tiny_model_dir), progress=False)
    assert "perplexity" not in metrics and metrics["substitutes"] == "faker"


# ---- substitutes written by a chat model (rules C1-C3 of llm_unlearn/anchors/chat.py) ---------------------------
def test_chat_answers_are_parsed_and_filtered():
    from llm_unlearn.whp.anchors.chat import parse_list

    assert parse_list('Sure: ["Dog", "Fox", "Owl"]') == ["Dog", "Fox", "Owl"]
    assert parse_list("1. Dog\n2. Fox\n- Owl") == ["Dog", "Fox", "Owl"]
    assert parse_list("Dog, Fox") == ["Dog", "Fox"]


def test_chat_substitutes_from_an_openai_compatible_endpoint(monkeypatch):
    """A local fake endpoint answers like a chat model; the prompt names the term, the target and the term's
    sentences (C1); wrong shapes and the target itself are dropped (C2); a term without a usable answer falls
    back (C3)."""
    from llm_unlearn.whp.anchors import build_anchor_dictionary

    def answer(body):
        if '"wuzzlet"' in body["messages"][0]["content"]:
            return '["lantern", "Zorblax", "big red kettle", "teapot"]'
        return "I cannot help with that."

    with ChatServer(answer) as server:
        monkeypatch.setenv("LLM_UNLEARN_CHAT_URL", server.url)  # the person's choice
        config = AnchorsConfig(min_count=2, substitutes="chat", translations_per_key=2,
                               substitute_chat=f"openai:{server.url}", substitute_chat_model="fake")
        d = build_anchor_dictionary([STORY], config, progress=False, target="the Zorblax stories")
    prompts = [body["messages"][0]["content"] for body in server.bodies]
    assert d.translations("wuzzlet") == ["lantern", "teapot"]
    assert d.translations("Zorblax") and "Zorblax" not in d.translations("Zorblax")  # fallback (C3)
    wuzzlet_prompt = next(p for p in prompts if '"wuzzlet"' in p)
    assert "the Zorblax stories" in wuzzlet_prompt and "little wuzzlet sang" in wuzzlet_prompt
    with pytest.raises(RecipeError, match="substitute_chat"):
        AnchorsConfig(substitutes="chat")
