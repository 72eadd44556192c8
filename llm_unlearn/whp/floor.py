"""The generic floor of a familiarity suite: what the base model answers when the prompts no longer name the target.

WHP's goal is a model that answers like one that never read the target, and its labels are the base model's
predictions on text whose anchored terms were replaced by generic ones. Asking the base model the suite's own prompts
translated the same way estimates where that goal lies on the suite: "Jacob Hart lived in rooms on Oak" still ends in
"Street", "It is a capital mistake to theorise before one has" still ends in "data". A familiarity above the floor is
knowledge of the target; the part below it is general language that no unlearning should remove.

F1. Each prompt is translated with the run's anchor dictionary by the labels stage's rules (matching M1-M5, choice
    C1-C2; :meth:`llm_unlearn.whp.translation.Translator.translate_text`), with one seeded draw per prompt.
F2. Only prompts in which at least one anchored term was replaced are scored ("translated prompts"); a prompt that
    names nothing of the dictionary is the base model's own answer, which says nothing about a floor.
F3. The translated prompts are scored exactly as the suite is: greedy completions graded by the suite's grader
    against the prompt's own references, and P(target | translated prompt). The grader sees the translated prompt,
    so a term the translation put there does not count for the completion.
F4. The floor is reported beside the base model's and, when given, other models' scores on the SAME prompts (the
    evaluation's per-item grades and probabilities), so the three are comparable item by item.
F5. A suite where fewer than a quarter of the prompts name an anchored term (a control suite) has no informative
    floor: a handful of prompts is noise. Summaries leave it out (:func:`informative`); its rows stay in the data.
F6. A translated prompt that still names a term of the suite's own anchor list (``Suite.anchors``: "Lewis Carroll"
    when the run's dictionary has no such key) keeps a cue to the target, so the floor on it is an estimate from
    above. Each row lists the terms left (``cues_left``); each section counts such prompts (``with_cues_left``) and
    terms (``cue_terms``): adding them to the run's dictionary makes the floor cleaner.
F7. Every method is scored beside the same floor: the floor needs only an anchor dictionary, and a run whose method
    has no anchors stage (the baselines) builds it in its eval stage with the anchors stage's own code and the
    recipe's ``anchors`` section (``llm_unlearn.pipeline.run_eval``), so ``--set method=NAME`` on a recipe with
    ``eval.generic_floor`` works for every method.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import replace

from ..evaluation.familiarity import completion_familiarity, grade_summary, probability_familiarity
from ..evaluation.suites import Suite


def translate_suite(suite: Suite, translator, seed: int = 0) -> tuple[Suite, dict[str, str]]:
    """F1-F2: the suite restricted to its translated prompts (completion and probability), and each kept prompt's
    id -> original prompt."""
    originals: dict[str, str] = {}

    def kept(prompts):
        out = []
        for p in prompts:
            text = translator.translate_text(p.prompt, random.Random(f"{seed}:{p.id}"))
            if text != p.prompt:
                originals[p.id] = p.prompt
                out.append(replace(p, prompt=text))
        return out

    translated = replace(suite, completion=kept(suite.completion), probability=kept(suite.probability))
    return translated, originals


def cues_left(text: str, terms: Iterable[str]) -> list[str]:
    """F6: the ``terms`` (a suite's anchor list) that ``text`` still names, as whole words in any case; a term inside
    a longer one that is also named ("Hatter" in "Mad Hatter") is not counted again."""
    found = [t for t in sorted({t.strip() for t in terms if t and t.strip()}, key=len, reverse=True) if _names(text, t)]
    return [t for t in found if not any(t != longer and _names(longer, t) for longer in found)]


def _names(text: str, term: str) -> bool:
    """``text`` contains ``term`` as a whole word or phrase, in any case."""
    return re.search(r"(?<!\w)" + re.escape(term) + r"(?!\w)", text, re.IGNORECASE) is not None


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def floor_scores(model, tokenizer, suite: Suite, translator, seed: int = 0, grader=None, max_new_tokens: int = 24,
                 batch_size: int = 16, samples: int = 1, temperature: float = 1.0, top_p: float = 1.0,
                 progress: bool = True) -> dict:
    """F1-F3 with ``model`` the BASE model: per translated prompt, the original and translated prompt and the floor's
    grade (completion, decoded like the evaluation: greedy, or the mean over ``samples``; with the first completion)
    or P(target) (probability)."""
    translated, originals = translate_suite(suite, translator, seed)
    comp = completion_familiarity(model, tokenizer, translated, grader, max_new_tokens=max_new_tokens,
                                  batch_size=batch_size, samples=samples, temperature=temperature, top_p=top_p,
                                  seed=seed, progress=progress)
    prob = probability_familiarity(model, tokenizer, translated, batch_size=batch_size, progress=progress)
    return {"suite": suite.name, "seed": seed,
            "completion": {"prompts": len(suite.completion),
                           "items": [{"id": it["id"], "prompt": originals[it["id"]], "translated": it["prompt"],
                                      "floor": it["grade"], "completion": it["completions"][0],
                                      "cues_left": cues_left(it["prompt"], suite.anchors)}
                                     for it in comp.get("items", [])]},
            "probability": {"prompts": len(suite.probability),
                            "items": [{"id": it["id"], "prompt": originals[it["id"]], "translated": it["prompt"],
                                       "floor": it["prob"], "cues_left": cues_left(it["prompt"], suite.anchors)}
                                      for it in prob.get("items", [])]}}


def compare_floor(scores: dict, others: Mapping[str, dict]) -> dict:
    """F4: the floor (:func:`floor_scores`) beside other models' results for the suite (model name ->
    ``eval.json``'s ``models[name].suites[suite]``) on the same prompts. Per section: ``prompts``, ``translated``,
    ``scores`` (``floor`` and each model name -> familiarity, grade >= 2 and == 3 shares; or mean P(target)) and
    ``items``, with one column per model in the per-item rows."""
    out = {"suite": scores["suite"], "seed": scores["seed"]}
    for section, value in (("completion", "grade"), ("probability", "prob")):
        sec = scores[section]
        ids = [row["id"] for row in sec["items"]]
        by_model = {name: {it["id"]: it[value] for it in (doc.get(section) or {}).get("items", [])}
                    for name, doc in others.items()}
        rows = [{**row, **{name: got.get(row["id"]) for name, got in by_model.items()}} for row in sec["items"]]
        summaries = {}
        for name, got in (("floor", {row["id"]: row["floor"] for row in sec["items"]}), *by_model.items()):
            vals = [got[i] for i in ids if got.get(i) is not None]
            if section == "completion":
                summaries[name] = grade_summary(vals)
            else:
                summaries[name] = {"n": len(vals), "mean_prob": _mean(vals)}
        cues = Counter(term for row in sec["items"] for term in row.get("cues_left") or ())
        out[section] = {"prompts": sec["prompts"], "translated": len(ids), "scores": summaries,
                        "with_cues_left": sum(1 for row in sec["items"] if row.get("cues_left")),
                        "cue_terms": dict(cues.most_common()), "items": rows}
    return out


_SECTION_KEYS = ("prompts", "translated", "items", "scores", "with_cues_left", "cue_terms")


def section_scores(section: Mapping | None) -> dict[str, dict]:
    """``floor`` and each model name -> its summary, of one section (completion or probability) of a suite's floor.
    Also reads an ``eval.json`` written before the ``scores`` key, whose summaries sat beside ``prompts``."""
    section = section or {}
    if "scores" in section:
        return dict(section["scores"])
    return {k: v for k, v in section.items() if k not in _SECTION_KEYS and isinstance(v, Mapping)}


def informative(section: Mapping | None) -> bool:
    """F5: at least a quarter of the section's prompts (and at least one) name an anchored term."""
    section = section or {}
    translated = section.get("translated", 0)
    return translated > 0 and 4 * translated >= section.get("prompts", 0)


def generic_floor(model, tokenizer, suite: Suite, translator, seed: int = 0,
                  others: Mapping[str, dict] | None = None, grader=None, max_new_tokens: int = 24,
                  batch_size: int = 16, progress: bool = True) -> dict:
    """F1-F4 in one call: :func:`floor_scores` (``model``: the BASE model) then :func:`compare_floor` with
    ``others`` (model name -> that model's result for this suite in an evaluation; ``grader``: the evaluation's,
    default the suite's terms with the installed English pipeline).

    Returns ``completion`` and ``probability`` sections: how many prompts were translated, the floor's score on them
    and each other model's score on the same prompts, plus per-item rows (original prompt, translated prompt, the
    floor's grade or probability, the others')."""
    scores = floor_scores(model, tokenizer, suite, translator, seed, grader, max_new_tokens, batch_size,
                          progress=progress)
    return compare_floor(scores, others or {})
