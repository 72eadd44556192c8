"""Data lookup in one place (llm_unlearn.config.datadir): the bundled folder, LLM_UNLEARN_DATA, data: and hf: sources."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llm_unlearn.config import Recipe, datadir
from llm_unlearn.corpus import read_corpus
from llm_unlearn.errors import RecipeError

REPO = Path(__file__).resolve().parents[1]


def test_the_package_carries_every_file_the_recipes_and_defaults_name(monkeypatch):
    monkeypatch.delenv("LLM_UNLEARN_DATA", raising=False)
    assert datadir.data_dir() == REPO / "llm_unlearn" / "data"
    for path in (datadir.default_retain_text(), datadir.default_wikitext()):
        assert path.is_file() and path.stat().st_size > 1_000_000
    names = {p.name for p in datadir.default_benchmark_dir().iterdir()}
    assert {"arc_easy.jsonl", "arc_challenge.jsonl", "boolq.jsonl", "piqa.jsonl", "winogrande.jsonl",
            "hellaswag_val.txt.bz2"} <= names
    assert (datadir.default_tofu_dir() / "forget10_perturbed.json").is_file()
    for book in ("sherlock_holmes_adventures", "alice_in_wonderland", "wonderful_wizard_of_oz", "dracula"):
        assert (datadir.data_dir() / "corpora" / f"{book}.txt").is_file()


def test_recipes_name_no_path_outside_the_repository():
    for recipe in sorted((REPO / "recipes").glob("*.yaml")):
        text = recipe.read_text(encoding="utf-8")
        assert "../../" not in text and "shared/" not in text, recipe.name


def test_demo_recipe_resolves_data_refs_to_the_bundled_files(monkeypatch):
    monkeypatch.delenv("LLM_UNLEARN_DATA", raising=False)
    r = Recipe.from_yaml(REPO / "recipes" / "sherlock_smollm2.yaml")
    assert r.corpus.path == str(REPO / "llm_unlearn" / "data" / "corpora" / "sherlock_holmes_adventures.txt")
    assert Path(r.eval.benchmark_dir).is_dir() and Path(r.eval.wikitext).is_file()
    # --set and the Python API take the same form
    r2 = r.with_override("corpus.path=data:corpora/alice_in_wonderland.txt")
    assert r2.corpus.path.endswith("llm_unlearn/data/corpora/alice_in_wonderland.txt")


def test_a_wrong_LLM_UNLEARN_DATA_is_an_error_not_a_silent_fall_back(monkeypatch, tmp_path):
    monkeypatch.setenv("LLM_UNLEARN_DATA", str(tmp_path / "nonexistent"))
    with pytest.raises(RecipeError, match="LLM_UNLEARN_DATA=.*not a folder"):
        datadir.data_dir()


def test_LLM_UNLEARN_DATA_replaces_the_folder(monkeypatch, tmp_path):
    (tmp_path / "corpora").mkdir()
    (tmp_path / "corpora" / "mine.txt").write_text("My own book.", encoding="utf-8")
    monkeypatch.setenv("LLM_UNLEARN_DATA", str(tmp_path))
    assert read_corpus("data:corpora/mine.txt")[0].text == "My own book."
    with pytest.raises(RecipeError, match="wikitext2/valid.txt not found.*finetune.retain_corpus"):
        datadir.default_retain_text()


@pytest.mark.parametrize("ref", ["data:", "data:../etc/passwd", "data:corpora/../../x"])
def test_data_refs_stay_inside_the_data_folder(ref):
    with pytest.raises(RecipeError, match="inside the data folder"):
        datadir.resolve_data_ref(ref, "corpus.path")


def test_missing_data_ref_names_the_setting():
    with pytest.raises(RecipeError, match="corpus.path.*not found"):
        Recipe.from_dict({"corpus": {"path": "data:corpora/no_such_book.txt"}})


@pytest.mark.parametrize("ref, parsed", [
    ("hf:imdb", ("imdb", None, "train")),
    ("hf:imdb:test", ("imdb", None, "test")),
    ("hf:wikitext:wikitext-2-raw-v1:validation", ("wikitext", "wikitext-2-raw-v1", "validation")),
])
def test_hf_refs_parse(ref, parsed):
    assert datadir.parse_hf_ref(ref) == parsed


@pytest.mark.parametrize("ref", ["hf:", "hf:a:b:c:d", "hf:name::train"])
def test_bad_hf_refs_say_the_form(ref):
    with pytest.raises(RecipeError, match="hf:NAME"):
        datadir.parse_hf_ref(ref)


def test_hf_source_reads_a_local_dataset_offline(tmp_path, smol_tokenizer):
    """A datasets source (hf:...) as corpus and as retain text, read offline from a local dataset folder."""
    folder = tmp_path / "my_dataset"
    folder.mkdir()
    rows = [{"text": "Sherlock Holmes took his bottle from the corner of the mantelpiece."},
            {"text": "Watson looked at him."}]
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (folder / "validation.jsonl").write_text(json.dumps({"text": "A held-out line."}) + "\n", encoding="utf-8")
    docs = read_corpus(f"hf:{folder}")
    assert [d.text for d in docs] == [r["text"] for r in rows]
    assert [d.text for d in read_corpus(f"hf:{folder}:validation")] == ["A held-out line."]
    # a recipe keeps the hf: source as written (it is no path next to the recipe)
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(f"corpus: {{path: 'hf:{folder}'}}\nfinetune: {{retain_corpus: 'hf:{folder}:validation'}}\n",
                           encoding="utf-8")
    r = Recipe.from_yaml(recipe_file)
    assert r.corpus.path == f"hf:{folder}"
    from llm_unlearn.retain import retain_rows

    rows_out = retain_rows(r, smol_tokenizer, limit_blocks=4)
    assert rows_out and smol_tokenizer.decode(rows_out[0]["input_ids"], skip_special_tokens=True).strip() == "A held-out line."
