"""Scoring under attack: the ``eval`` scorer, with the prompt or the model changed by an attack.

Every number here comes from the same pieces as ``llm-unlearn eval``: completions from
:func:`llm_unlearn.evaluation.familiarity.generate`, graded 0-3 by :class:`~llm_unlearn.evaluation.grading.Grader`
(familiarity = mean grade / 3), and P(target | prompt) from :func:`~llm_unlearn.evaluation.scoring.score_items`.
Without an attack context the two functions of :mod:`llm_unlearn.evaluation.familiarity` are called as they are.

Rules:

* ATK-S1: a prompt-side attack (in-context examples, a passage, a jailbreak prefix) changes only what the model
  reads, and the completion is graded against the ORIGINAL prompt. An item whose answer the attack text itself
  contains is not scored under that attack (a model that repeats it copies, it does not recover): a completion
  item when one of its references, or the first word of a multi-word reference (a first name: "Mycroft" of
  "Mycroft Holmes"), occurs in the attack text as a whole word (casefolded); a probability item when its target
  does. The row records how many items were left out; its recovery is computed on the items kept, for the base
  and unlearned models too (:func:`copied`).
* ATK-S2: with in-context examples one per line, a completion ends at its first newline: the next line is the
  model inventing another example, not its answer to the scored prompt.
* ATK-S3: chat answers are matched on the grader's normalised tokens (casefold, lemmas), any accepted answer.
* ATK-S4: a two-choice item is right when the true answer's log-likelihood beats the false one's (sum over
  tokens, as lm-eval's ``acc``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from ..config import EvalConfig
from ..evaluation.familiarity import completion_familiarity, generate, probability_familiarity
from ..evaluation.grading import Grader, Normalizer, contains
from ..evaluation.scoring import score_items
from ..evaluation.suites import Suite

ContextFn = Callable[[str, str], str]  # (kind "completion" | "probability", item id) -> text put before the prompt

_NOT_NAMES = {"the", "a", "an", "dr", "dr.", "mr", "mr.", "mrs", "mrs.", "miss", "sir", "lord", "lady", "of"}


def answer_terms(references: list[str]) -> list[str]:
    """ATK-S1: the strings whose presence in an attack text gives an item's answer away."""
    out = []
    for ref in references:
        ref = ref.strip()
        if not ref:
            continue
        out.append(ref)
        words = ref.split()
        if len(words) > 1 and words[0][:1].isupper() and words[0].casefold() not in _NOT_NAMES and len(words[0]) > 2:
            out.append(words[0])
    return list(dict.fromkeys(out))


def copied(text: str, references: list[str]) -> bool:
    """ATK-S1: whether ``text`` contains one of the answer terms as a whole word (casefolded)."""
    low = text.casefold()
    return any(re.search(r"(?<!\w)" + re.escape(t.casefold()) + r"(?!\w)", low) for t in answer_terms(references))


@dataclass
class Scorer:
    """Scores one loaded model at a time on suites and probes, with the eval settings."""

    eval_config: EvalConfig = field(default_factory=EvalConfig)
    progress: bool = True
    normalizer: Normalizer | None = None
    chat_max_new_tokens: int = 48
    _graders: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.normalizer is None:
            self.normalizer = Normalizer(self.eval_config.spacy_model)

    def grader(self, suite: Suite) -> Grader:
        key = (tuple(suite.anchors), tuple(suite.genre_terms))
        if key not in self._graders:
            self._graders[key] = Grader(suite.anchors, suite.genre_terms, normalizer=self.normalizer)
        return self._graders[key]

    # ---- completion familiarity + P(target) ----------------------------------------------------------
    def suite(self, model, tokenizer, suite: Suite, context: ContextFn | None = None,
              cut_at_newline: bool = False, label: str = "") -> dict:
        """Familiarity and P(target) of one suite; ``context`` puts attack text before each prompt (ATK-S1)."""
        cfg = self.eval_config
        was_training = model.training
        model.eval()
        try:
            if context is None and not cut_at_newline:
                comp = completion_familiarity(model, tokenizer, suite, self.grader(suite),
                                              max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size,
                                              samples=1, seed=cfg.seed, progress=self.progress)
                prob = probability_familiarity(model, tokenizer, suite, batch_size=cfg.batch_size,
                                               progress=self.progress)
                comp_items = [(it["id"], it["grade"] / 3, it["completions"][0]) for it in comp.get("items", [])]
                prob_items = [(it["id"], it["prob"]) for it in prob.get("items", [])]
            else:
                suite, left_out = without_copied(suite, context)
                comp_items = self._completion(model, tokenizer, suite, context, cut_at_newline, label)
                prob_items = self._probability(model, tokenizer, suite, context, label)
        finally:
            model.train(was_training)
        m = _measure(familiarity=comp_items, prob=prob_items)
        if context is not None:
            m["left_out"] = left_out
        return m

    def _completion(self, model, tokenizer, suite, context, cut, label):
        if not suite.completion:
            return []
        ctx = context or (lambda kind, pid: "")
        prompts = [ctx("completion", p.id) + p.prompt for p in suite.completion]
        outs = generate(model, tokenizer, prompts, max_new_tokens=self.eval_config.max_new_tokens,
                        batch_size=self.eval_config.batch_size, seed=self.eval_config.seed, progress=self.progress,
                        desc=f"{label or suite.name}: completions")
        texts = [o[0].split("\n", 1)[0] if cut else o[0] for o in outs]
        grades = self.grader(suite).grade_many([p.prompt for p in suite.completion], texts,
                                               [p.references for p in suite.completion])
        return [(p.id, g.grade / 3, t) for p, g, t in zip(suite.completion, grades, texts, strict=True)]

    def _probability(self, model, tokenizer, suite, context, label):
        if not suite.probability:
            return []
        ctx = context or (lambda kind, pid: "")
        scored = score_items(model, tokenizer, [[(ctx("probability", p.id) + p.prompt, p.target)]
                                                for p in suite.probability],
                             batch_size=self.eval_config.batch_size, desc=f"{label or suite.name}: probabilities",
                             progress=self.progress)
        return [(p.id, math.exp(ch.logprob)) for p, (ch,) in zip(suite.probability, scored, strict=True)]

    # ---- chat questions and two-choice items --------------------------------------------------------------
    def chat(self, model, tokenizer, items: list, system: str | None = None, label: str = "chat") -> dict:
        """Accuracy on chat questions (ATK-S3): the question in the model's chat template, greedy answer."""
        if not items:
            return _measure()
        prompts = [chat_prompt(tokenizer, it.question, system) for it in items]
        was_training = model.training
        model.eval()
        try:
            outs = generate(model, tokenizer, prompts, max_new_tokens=self.chat_max_new_tokens,
                            batch_size=self.eval_config.batch_size, seed=self.eval_config.seed,
                            progress=self.progress, desc=f"{label}: answers")
        finally:
            model.train(was_training)
        answers = [o[0] for o in outs]
        correct = answers_match(self.normalizer, answers, [it.answers for it in items])
        return _measure(accuracy=[(it.id, float(c), a) for it, c, a in zip(items, correct, answers, strict=True)])

    def two_choice(self, model, tokenizer, items: list, prefix: str = "", label: str = "two-choice") -> dict:
        """Accuracy on two-choice items (ATK-S4): log-likelihood of the true vs the false answer."""
        if not items:
            return _measure()
        was_training = model.training
        model.eval()
        try:
            scored = score_items(model, tokenizer,
                                 [[(prefix + two_choice_context(it), " " + it.true),
                                   (prefix + two_choice_context(it), " " + it.false)] for it in items],
                                 batch_size=self.eval_config.batch_size, desc=label, progress=self.progress)
        finally:
            model.train(was_training)
        rows = []
        for it, (t, f) in zip(items, scored, strict=True):
            rows.append((it.id, float(t.logprob > f.logprob), f"{t.logprob:.2f} vs {f.logprob:.2f}"))
        return _measure(accuracy=rows)


def without_copied(suite: Suite, context: ContextFn | None) -> tuple[Suite, dict]:
    """ATK-S1: the suite without the items whose answer the attack text contains, and how many were left out."""
    import dataclasses

    if context is None:
        return suite, {"completion": 0, "probability": 0}
    comp = [p for p in suite.completion if not copied(context("completion", p.id), p.references)]
    prob = [p for p in suite.probability if not copied(context("probability", p.id), [p.target])]
    left = {"completion": len(suite.completion) - len(comp), "probability": len(suite.probability) - len(prob)}
    return dataclasses.replace(suite, completion=comp, probability=prob), left


def chat_prompt(tokenizer, question: str, system: str | None = None) -> str:
    """The question in the tokenizer's chat template (generation prompt added); a plain Q/A layout without one."""
    if getattr(tokenizer, "chat_template", None):
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": question}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return (f"{system}\n\n" if system else "") + f"Question: {question}\nAnswer:"


def two_choice_context(item) -> str:
    return f"Question: {item.question}\nAnswer:"


def answers_match(normalizer: Normalizer, responses: list[str], accepted: list[list[str]]) -> list[bool]:
    """Whether each response names one of its accepted answers (token match on normalised forms)."""
    seqs = normalizer.many(responses)
    out = []
    for seq, answers in zip(seqs, accepted, strict=True):
        out.append(any(contains(seq, a) for a in normalizer.many(answers)))
    return out


def _measure(familiarity=(), prob=(), accuracy=()) -> dict:
    """One measurement: means, and the per-item values (id-ordered lists) that the paired statistics use."""
    m: dict = {"familiarity": None, "prob": None, "accuracy": None, "items": {}, "examples": []}
    for key, rows in (("familiarity", familiarity), ("prob", prob), ("accuracy", accuracy)):
        rows = list(rows)
        if not rows:
            continue
        m[key] = sum(r[1] for r in rows) / len(rows)
        m["items"][key] = {"ids": [r[0] for r in rows], "values": [r[1] for r in rows]}
        if len(rows[0]) > 2:
            m["examples"] += [{"id": r[0], "score": r[1], "output": r[2]} for r in rows[:5]]
    return m
