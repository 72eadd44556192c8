"""Recipes: typed dataclasses from YAML, strict about keys and types, with `--set` overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from llm_unlearn.config import Recipe
from llm_unlearn.errors import RecipeError


def write(tmp_path: Path, text: str, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_round_trip_through_yaml(tmp_path):
    default = Recipe()
    path = write(tmp_path, default.to_yaml())
    loaded = Recipe.from_yaml(path)
    assert loaded == default
    assert loaded.model.spec == "smollm2-135m"
    assert loaded.corpus.block_size == 512
    default.validate()


def test_empty_file_gives_defaults(tmp_path):
    assert Recipe.from_yaml(write(tmp_path, "")) == Recipe()


def test_values_and_nested_sections_are_typed(tmp_path):
    path = write(tmp_path, """
name: sherlock
target: Sherlock Holmes
model:
  spec: gemma3-270m
  dtype: bfloat16
corpus:
  block_size: 256
  max_blocks: 10
labels:
  alpha: 4          # an int where a float is expected: accepted, converted
  alphas: [2, 4, 8]
finetune:
  learning_rate: 3e-4   # PyYAML reads this as a string; it must still be a float
  lora_r: 8
  target_modules: [q_proj, v_proj]
""")
    r = Recipe.from_yaml(path)
    assert r.name == "sherlock" and r.target == "Sherlock Holmes"
    assert r.model.spec == "gemma3-270m" and r.model.dtype == "bfloat16"
    assert r.corpus.block_size == 256 and r.corpus.max_blocks == 10
    assert r.corpus.validation_fraction == 0.05  # untouched defaults stay
    assert r.labels.alpha == 4.0 and isinstance(r.labels.alpha, float)
    assert r.label_alphas() == [2.0, 4.0, 8.0]
    assert r.finetune.learning_rate == pytest.approx(3e-4) and isinstance(r.finetune.learning_rate, float)
    assert r.finetune.lora_r == 8
    assert r.finetune.target_modules == ["q_proj", "v_proj"]
    assert r.reinforce.target_modules[0] == "q_proj"  # other sections keep their defaults


def test_unknown_top_level_key_names_key_file_and_suggestion(tmp_path):
    path = write(tmp_path, "modle:\n  spec: x\n")
    with pytest.raises(RecipeError) as err:
        Recipe.from_yaml(path)
    msg = str(err.value)
    assert str(path) in msg and "'modle'" in msg and "did you mean 'model'" in msg


def test_unknown_nested_key_is_reported_with_its_section(tmp_path):
    path = write(tmp_path, "corpus:\n  blocksize: 128\n")
    with pytest.raises(RecipeError) as err:
        Recipe.from_yaml(path)
    msg = str(err.value)
    assert str(path) in msg and "corpus.blocksize" in msg and "did you mean 'corpus.block_size'" in msg


def test_unknown_key_without_close_match_lists_known_keys(tmp_path):
    with pytest.raises(RecipeError, match=r"known keys: .*block_size"):
        Recipe.from_yaml(write(tmp_path, "corpus:\n  zzzzzz: 1\n"))


@pytest.mark.parametrize(
    "text, key",
    [
        ("corpus:\n  block_size: big\n", "corpus.block_size"),
        ("corpus:\n  block_size: 1.5\n", "corpus.block_size"),  # a float is not an int
        ("corpus:\n  block_size: true\n", "corpus.block_size"),  # a bool is not an int
        ("model:\n  trust_remote_code: 'yes please'\n", "model.trust_remote_code"),
        ("finetune:\n  target_modules: q_proj\n", "finetune.target_modules"),
        ("labels:\n  alpha: [1, 2]\n", "labels.alpha"),
        ("name: 3\n", "name"),
    ],
)
def test_wrong_type_names_key_and_file(tmp_path, text, key):
    path = write(tmp_path, text)
    with pytest.raises(RecipeError) as err:
        Recipe.from_yaml(path)
    assert f"'{key}'" in str(err.value) and str(path) in str(err.value)


def test_section_must_be_a_mapping(tmp_path):
    with pytest.raises(RecipeError, match="'model' must be a mapping"):
        Recipe.from_yaml(write(tmp_path, "model: smollm2-135m\n"))


def test_top_level_must_be_a_mapping(tmp_path):
    with pytest.raises(RecipeError, match="mapping"):
        Recipe.from_yaml(write(tmp_path, "- a\n- b\n"))


def test_invalid_yaml_and_missing_file(tmp_path):
    with pytest.raises(RecipeError, match="not valid YAML"):
        Recipe.from_yaml(write(tmp_path, "model: [unclosed\n"))
    with pytest.raises(RecipeError, match="not found"):
        Recipe.from_yaml(tmp_path / "nope.yaml")


def test_overrides_scalars_lists_and_nulls(tmp_path):
    path = write(tmp_path, "corpus:\n  block_size: 256\n")
    r = Recipe.from_yaml(path, overrides=[
        "corpus.block_size=64",
        "labels.alphas=[2, 5]",
        "finetune.learning_rate=1e-4",
        "corpus.max_blocks=null",
        "model.spec=gemma3-270m",
        "name=quick",
        "finetune.target_modules=[q_proj]",
    ])
    assert r.corpus.block_size == 64
    assert r.labels.alphas == [2, 5] and r.label_alphas() == [2.0, 5.0]
    assert r.finetune.learning_rate == pytest.approx(1e-4)
    assert r.corpus.max_blocks is None
    assert r.model.spec == "gemma3-270m"
    assert r.name == "quick"
    assert r.finetune.target_modules == ["q_proj"]


def test_later_override_wins():
    r = Recipe().with_override("corpus.block_size=64").with_override("corpus.block_size=32")
    assert r.corpus.block_size == 32


def test_overrides_are_checked_together_not_one_by_one():
    """The demo recipe's own comment turns its quantization-aware full fine-tune back into LoRA with
    ``--set finetune.full_finetune=false --set finetune.quantization_aware=null``: the first alone is an invalid
    recipe, the two together a valid one, in either order; what stays invalid at the end is still refused."""
    demo = Path(__file__).resolve().parents[1] / "recipes" / "sherlock_smollm2.yaml"
    sets = ["finetune.full_finetune=false", "finetune.quantization_aware=null"]
    for items in (sets, sets[::-1]):
        r = Recipe.from_yaml(demo, overrides=items)
        assert r.finetune.full_finetune is False and r.finetune.quantization_aware is None
    with pytest.raises(RecipeError, match="quantization_aware must be null unless full_finetune"):
        Recipe.from_yaml(demo, overrides=sets[:1])
    with pytest.raises(RecipeError, match="quantization_aware must be null unless full_finetune"):
        Recipe.from_yaml(demo, overrides=sets[::-1] + ["finetune.quantization_aware=base"])


@pytest.mark.parametrize(
    "item, match",
    [
        ("corpus.blok_size=3", r"unknown key 'corpus.blok_size'.*did you mean 'corpus.block_size'"),
        ("corpsu.block_size=3", r"unknown section 'corpsu'.*did you mean 'corpus'"),
        ("corpus.block_size=abc", r"'corpus.block_size' must be int"),
        ("corpus.block_size", r"section.key=value"),
        ("labels.alphas=[1, 2", r"not valid YAML"),
    ],
)
def test_bad_overrides(item, match):
    with pytest.raises(RecipeError, match=match):
        Recipe().with_override(item)


def test_relative_paths_resolve_against_the_recipe_file(tmp_path, monkeypatch):
    recipe_dir = tmp_path / "project" / "recipes"
    path = write(recipe_dir, """
corpus:
  path: ../data/corpus.txt
anchors:
  user_dictionary: ./anchors.yaml
finetune:
  retain_corpus: /abs/wiki.txt
eval:
  suites: [./suites/a, ../suites/b, /abs/c]
""")
    monkeypatch.chdir(tmp_path)  # the working directory must not matter
    r = Recipe.from_yaml(path)
    assert r.corpus.path == str((tmp_path / "project" / "data" / "corpus.txt").resolve())
    assert r.anchors.user_dictionary == str((recipe_dir / "anchors.yaml").resolve())
    assert r.finetune.retain_corpus == "/abs/wiki.txt"
    assert r.eval.suites == [str((recipe_dir / "suites" / "a").resolve()),
                             str((tmp_path / "project" / "suites" / "b").resolve()), "/abs/c"]
    # the guard's text may be a list of files, resolved the same way
    r = Recipe.from_yaml(write(recipe_dir, "finetune:\n  retain_corpus: [./x.txt, /abs/y.txt]\n"))
    assert r.finetune.retain_corpus == [str((recipe_dir / "x.txt").resolve()), "/abs/y.txt"]


def test_datasets_id_is_not_treated_as_a_path(tmp_path):
    r = Recipe.from_yaml(write(tmp_path, "corpus:\n  path: someone/some-dataset\n"))
    assert r.corpus.path == "someone/some-dataset"


def test_validate_rejects_bad_values():
    Recipe().validate()
    with pytest.raises(RecipeError, match="alpha"):
        Recipe().with_override("labels.alpha=0").validate()
    with pytest.raises(RecipeError, match="block_size"):
        Recipe().with_override("corpus.block_size=4").validate()
    with pytest.raises(RecipeError, match="label_alpha"):
        Recipe().with_override("finetune.label_alpha=7").validate()
    with pytest.raises(RecipeError, match="'first' or 'spread'"):
        Recipe().with_override("corpus.block_sampling=random").validate()


def test_section_hash_changes_only_with_its_sections():
    base = Recipe()
    changed = base.with_override("finetune.learning_rate=1e-3")
    assert base.section_hash("corpus") == changed.section_hash("corpus")
    assert base.section_hash("finetune") != changed.section_hash("finetune")


@pytest.mark.parametrize("name", ["sherlock_smollm2", "sherlock_gemma3", "harry_potter_llama2", "custom_concept"])
def test_shipped_recipes_load_and_validate(name):
    """Every recipe in recipes/ parses, validates, and the files it ships with (articles, user anchors) exist."""
    recipe = Recipe.from_yaml(Path(__file__).resolve().parents[1] / "recipes" / f"{name}.yaml")
    recipe.validate()
    for path in recipe.corpus.extra_paths + ([recipe.anchors.user_dictionary] if recipe.anchors.user_dictionary else []):
        assert Path(path).is_file(), path
    if name.startswith("sherlock"):
        assert recipe.finetune.soft_labels and recipe.labels.soft_top_k > 0 and recipe.finetune.retain_weight > 0
        from llm_unlearn.whp.anchors import AnchorDictionary

        AnchorDictionary().merge(recipe.anchors.user_dictionary)  # the user dictionary is well-formed


def test_specificity_options_are_checked():
    """labels.rise_tokens (R3) is "all" or "target"; rise_near_anchor (R5) only beside "target"."""
    Recipe().with_override("labels.rise_tokens=target").validate()
    with pytest.raises(RecipeError, match="rise_tokens"):
        Recipe().with_override("labels.rise_tokens=names").validate()
    with pytest.raises(RecipeError, match="rise_keyness"):
        Recipe().with_override("labels.rise_keyness=0.5").validate()
    # R5: a window in tokens, also only beside rise_tokens: target
    Recipe().with_override("labels.rise_tokens=target").with_override("labels.rise_near_anchor=8").validate()
    with pytest.raises(RecipeError, match=r"rise_near_anchor must be 0 unless labels.rise_tokens is target"):
        Recipe().with_override("labels.rise_near_anchor=8").validate()
    with pytest.raises(RecipeError, match=r"rise_near_anchor must be an integer in \[0, "):
        Recipe().with_override("labels.rise_tokens=target").with_override("labels.rise_near_anchor=-1").validate()


def test_settings_added_later_leave_earlier_runs_fingerprints_alone():
    """Off (their defaults), the labels.rise_* settings and eval.generic_floor are not part of the
    stage hashes, so runs made before they existed are not recomputed after an upgrade; on, they change the stage
    they belong to and what follows it."""
    import hashlib
    import json

    from llm_unlearn.pipeline import STAGES, Pipeline

    def pipeline(*sets):
        recipe = Recipe.from_dict({"corpus": {"path": "book.txt"}})
        for item in sets:
            recipe = recipe.with_override(item)
        return Pipeline(recipe, "/nonexistent-run")

    plain = pipeline()
    data = plain.recipe.to_dict()
    for key in ("rise_tokens", "rise_keyness", "rise_near_anchor"):
        data["labels"].pop(key)
    data["labels"]["position_weight"] = "none"  # a removed option, hashed at its "off" value by runs made with it
    before = json.dumps({"model": data["model"], "labels": data["labels"]}, sort_keys=True, default=str)
    assert plain._config_hash(STAGES["labels"]) == hashlib.sha256(before.encode()).hexdigest()[:16]
    target = pipeline("labels.rise_tokens=target")
    a, b = plain.fingerprints(), target.fingerprints()
    assert a["reinforce"] == b["reinforce"] and a["labels"] != b["labels"] and a["finetune"] != b["finetune"]
    assert pipeline("labels.rise_tokens=target", "labels.rise_near_anchor=8").fingerprints()["labels"] != b["labels"]
    guarded = pipeline("finetune.retain_weight=1")
    assert guarded.fingerprints()["labels"] == a["labels"] and guarded.fingerprints()["finetune"] != a["finetune"]
    eval_data = plain.recipe.to_dict()["eval"]
    eval_data.pop("generic_floor")
    before = json.dumps({"eval": eval_data}, sort_keys=True, default=str)
    assert plain._config_hash(STAGES["eval"]) == hashlib.sha256(before.encode()).hexdigest()[:16]
    floored = pipeline("eval.generic_floor=true").fingerprints()
    assert floored["finetune"] == a["finetune"] and floored["eval"] != a["eval"]


def test_generic_floor_works_with_every_method():
    """Floor rule F7: any method's evaluation builds the anchor dictionary the floor needs, so the baselines take
    eval.generic_floor too (one --set swaps the method of a recipe that uses it)."""
    Recipe().with_override("eval.generic_floor=true").validate()
    for method in ("grad_ascent", "grad_diff", "npo", "simnpo", "rmu"):
        Recipe().with_override(f"method={method}").with_override("eval.generic_floor=true").validate()


def test_the_former_anchor_kinds_leave_earlier_runs_fingerprints_alone():
    """anchors.kinds: ner with anchors.period_words: false is the dictionary of runs made before these settings:
    such a recipe hashes its anchors stage as before; the evidence-based default hashes differently."""
    from llm_unlearn.pipeline import STAGES, Pipeline

    def anchors_hash(*sets):
        recipe = Recipe.from_dict({"corpus": {"path": "book.txt"}})
        for item in sets:
            recipe = recipe.with_override(item)
        return Pipeline(recipe, "/nonexistent-run")._config_hash(STAGES["anchors"])

    former = anchors_hash("anchors.kinds=ner", "anchors.period_words=false")
    data = Recipe.from_dict({"corpus": {"path": "book.txt"}}).to_dict()
    for key in ("kinds", "period_words"):  # as a recipe of a version without these settings
        data["anchors"].pop(key)
    import hashlib
    import json

    from llm_unlearn.pipeline import ADDED_SETTINGS

    for (section, key), off in ADDED_SETTINGS.items():  # the other settings added later, off
        if section != "anchors" and data[section].get(key) in (off, None):
            data[section].pop(key, None)
    stage = STAGES["anchors"]
    data["export"] = {k: v for k, v in data["export"].items() if k not in ("push_to_hub", "private")}
    before = json.dumps({s: data[s] for s in stage.sections}, sort_keys=True, default=str)
    assert former == hashlib.sha256(before.encode()).hexdigest()[:16]
    assert anchors_hash() != former


@pytest.mark.parametrize("key, value, advice", [
    ("finetune.retain_name_weight", "4", "finetune.retain_weight alone"),
    ("finetune.neighbour_texts", "64", "finetune.retain_corpus"),
    ("finetune.position_weighting", "true", "finetune.soft_labels"),
    ("labels.position_weight", "kl", "finetune.soft_labels"),
    ("labels.rise_other", "0.1", "labels.rise_tokens"),
    ("labels.rise_letters", "false", "always count as target tokens"),
])
def test_removed_option_stops_with_what_to_use_instead(tmp_path, capsys, key, value, advice):
    """An option measured to do nothing or harm was removed: set by --set, in a recipe file or through the API it is
    a RecipeError (exit 2) naming the option and what to use instead."""
    from llm_unlearn.cli import main

    with pytest.raises(RecipeError, match=rf"{key} was removed: .*{advice}"):
        Recipe().with_override(f"{key}={value}")
    section, name = key.split(".")
    path = tmp_path / "r.yaml"
    path.write_text(f"corpus: {{path: book.txt}}\n{section}:\n  {name}: {value}\n")
    with pytest.raises(RecipeError, match=rf"{key} was removed"):
        Recipe.from_yaml(path)
    with pytest.raises(RecipeError, match=rf"{key} was removed"):
        Recipe.from_dict({section: {name: value}})
    assert main(["run", str(path), "--out", str(tmp_path / "run"), "--dry-run"]) == 2
    assert f"{key} was removed" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_removed_option_at_its_off_value_is_dropped():
    """Run directories of earlier versions saved every option, removed ones at their off value: those recipes still
    load (the option is dropped), and the stage fingerprints of such runs do not change."""
    from llm_unlearn.config import REMOVED_OPTIONS

    data = {"finetune": {"retain_name_weight": 0.0, "neighbour_texts": 0, "position_weighting": False},
            "labels": {"position_weight": "none", "rise_other": 0.0, "rise_letters": True}}
    recipe = Recipe.from_dict(data)
    assert recipe.to_dict() == Recipe().to_dict()
    assert Recipe().with_override("labels.rise_letters=true").to_dict() == Recipe().to_dict()
    fields = {s: set(v) for s, v in Recipe().to_dict().items() if isinstance(v, dict)}
    assert all(key not in fields[section] for section, key in REMOVED_OPTIONS)
