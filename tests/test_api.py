"""The Python API for a custom concept: a corpus given as Python strings and the user's own anchored terms
(README, "Python API"), on a tiny model in seconds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llm_unlearn import unlearn
from llm_unlearn.errors import RecipeError

STORY = ("Zorblax the Wanderer sailed from Quillmoor to the Glass Isles. In Quillmoor, Zorblax met Captain Venn, "
         "who feared the Wanderer's black ship. Zorblax laughed and said the Glass Isles were his by right. ")


def test_custom_concept_from_strings_with_user_anchors(tmp_path, tiny_model_dir):
    corpus = [STORY * 6, ("The harbour of Quillmoor was quiet when Zorblax returned. " * 8)]
    result = unlearn(
        model=str(tiny_model_dir),
        corpus=corpus,
        anchors={"Zorblax": ["Marcus", "Peter"], "Quillmoor": ["Eastport"], "Venn": None},
        out=tmp_path / "run",
        target="Zorblax the Wanderer",
        overrides={"corpus.block_size": 64, "corpus.validation_fraction": 0.2, "anchors.min_count": 2,
                   "reinforce.max_steps": 2, "reinforce.eval_every": 1, "reinforce.target_modules": ["q_proj", "v_proj"],
                   "finetune.max_steps": 2, "finetune.eval_every": 1, "finetune.target_modules": ["q_proj", "v_proj"],
                   "eval.enabled": False},
        progress=False,
    )
    # the texts were stored in the run directory, and every stage ran from there
    stored = [json.loads(line)["text"] for line in (tmp_path / "run" / "inputs" / "corpus.jsonl").read_text().splitlines()]
    assert stored == corpus
    import yaml

    anchors = yaml.safe_load((tmp_path / "run" / "anchors" / "anchors.yaml").read_text())
    assert anchors["anchors"]["Zorblax"]["translations"] == ["Marcus", "Peter"]
    assert anchors["anchors"]["Quillmoor"]["translations"] == ["Eastport"]
    assert "Venn" not in anchors["anchors"] and "Venn" in anchors["vetoed"]
    # the user's terms were used: translated in blocks, and their positions handled by the masking rules
    labels = result.metrics["labels"]
    assert labels["anchors_used_in_blocks"].get("Zorblax", 0) > 0
    assert labels["masked_by_rule"].get("predicts_repeated_anchor", 0) > 0
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(result.model_path) is not None
    assert result.manifest["stages"]["export"]["status"] == "done"


def test_anchor_argument_must_be_a_mapping(tmp_path, tiny_model_dir):
    with pytest.raises(RecipeError, match="mapping"):
        unlearn(model=str(tiny_model_dir), corpus=[STORY], anchors=["Zorblax"], out=tmp_path / "run", progress=False)


def test_alice_example_makes_a_valid_recipe_and_its_suites_load():
    """The Alice end-to-end example: the demo recipe with Alice's corpus, automatic anchors with model
    substitutes, and three suites (target + two neighbours) that load."""
    import importlib.util

    from conftest import REPO

    from llm_unlearn.config import Recipe
    from llm_unlearn.evaluation.suites import load_suite

    spec = importlib.util.spec_from_file_location("alice_example", REPO / "examples" / "alice_wonderland.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    overrides = example.alice_overrides(["finetune.retain_weight=0.5"])
    recipe = Recipe.from_yaml(example.RECIPE, [f"{k}={json.dumps(v)}" for k, v in overrides.items()])
    recipe.validate()
    assert recipe.anchors.user_dictionary is None and recipe.anchors.substitutes == "model"
    assert recipe.finetune.retain_weight == 0.5 and recipe.corpus.extra_paths == []
    assert [Path(p).name for p in recipe.eval.suites] == ["alice_wonderland", "sherlock_holmes", "control"]
    suites = [load_suite(path) for path in overrides["eval.suites"]]
    assert [s.name for s in suites] == ["alice_wonderland", "sherlock_holmes", "control"]
    alice = suites[0]
    assert len(alice.completion) == 60 and len(alice.probability) == 20
    assert "Cheshire Cat" in alice.anchors and not set(alice.anchors) & {"Holmes", "Sherlock"}
