"""Prompt suites: the familiarity probes of one concept, kept as data.

A suite is a folder::

    suite.yaml          name, concept, anchors (target-specific terms), genre_terms (generic genre words)
    completion.jsonl    {"prompt", "references": [...], "subtlety", "category"?, "id"?}   one per line
    probability.jsonl   {"prompt", "target", "category"?, "id"?}                            one per line

``subtlety`` is ``explicit`` (the prompt names the concept: "Sherlock Holmes lived at"), ``partial`` (it
names something related but not the concept itself) or ``indirect`` (no name at all: "The detective lit his
pipe and told the doctor"); the numbers 1, 2, 3 are accepted for the same. A ``target`` may be several tokens
(" Baker Street"); write its leading space, as it would appear after the prompt. Either JSONL file may be
missing, not both. Without ``suite.yaml`` the anchors default to every reference of the suite.

Per-language versions of the prompts sit beside them as ``completion.<lang>.jsonl`` / ``probability.<lang>.jsonl``
(``fr``, ``de``, ...); ``load_suite(path, language="fr")`` loads those with the suite's anchors, plus the genre
words listed under ``languages: {fr: {genre_terms: [...]}}`` in ``suite.yaml``. Other probe files a suite may hold
(``chat.jsonl``, ``two_choice.jsonl``) are read by :mod:`llm_unlearn.attacks.probes`.

:func:`draft_suite` writes a first draft from a corpus and an anchor list, for the user to edit.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..config.yamlio import load_yaml
from ..errors import EvalError

SUBTLETIES = ("explicit", "partial", "indirect")


@dataclass
class CompletionPrompt:
    id: str
    prompt: str
    references: list[str]
    subtlety: str = "explicit"
    category: str = "general"


@dataclass
class ProbabilityPrompt:
    id: str
    prompt: str
    target: str
    category: str = "general"


@dataclass
class Suite:
    name: str
    path: str
    concept: str = ""
    anchors: list[str] = field(default_factory=list)
    genre_terms: list[str] = field(default_factory=list)
    completion: list[CompletionPrompt] = field(default_factory=list)
    probability: list[ProbabilityPrompt] = field(default_factory=list)

    def describe(self) -> dict:
        return {"name": self.name, "path": self.path, "concept": self.concept, "n_completion": len(self.completion),
                "n_probability": len(self.probability), "n_anchors": len(self.anchors),
                "n_genre_terms": len(self.genre_terms)}


def _read_jsonl(path: Path) -> list[tuple[int, dict]]:
    rows = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise EvalError(f"{path}: not UTF-8 text ({exc})") from exc
    for no, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("//"):
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EvalError(f"{path}:{no}: not valid JSON ({exc.msg})") from exc
        if not isinstance(obj, dict):
            raise EvalError(f"{path}:{no}: each line must be a JSON object")
        rows.append((no, obj))
    return rows


def _subtlety(value, where: str) -> str:
    if value is None:
        return "explicit"
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 3:
        return SUBTLETIES[value - 1]
    if isinstance(value, str) and value.strip().lower() in SUBTLETIES:
        return value.strip().lower()
    raise EvalError(f"{where}: subtlety must be one of {', '.join(SUBTLETIES)} (or 1-3), got {value!r}")


def _str_list(value, where: str, key: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise EvalError(f"{where}: '{key}' must be a non-empty list of strings")
    return value


def suite_languages(path: str | Path) -> list[str]:
    """Languages with their own prompt files in a suite folder (``completion.fr.jsonl`` -> ``fr``), sorted."""
    folder = Path(path).expanduser()
    langs = {f.name.split(".")[1] for f in folder.glob("*.*.jsonl")
             if f.name.split(".")[0] in ("completion", "probability") and len(f.name.split(".")) == 3}
    return sorted(langs)


def load_suite(path: str | Path, language: str | None = None) -> Suite:
    """Load and validate a suite folder; every problem is an :class:`EvalError` naming file and line.

    With ``language`` the prompts come from ``completion.<language>.jsonl`` / ``probability.<language>.jsonl``
    and the suite is named ``<name>.<language>``."""
    folder = Path(path).expanduser()
    if folder.is_file() and folder.suffix == ".jsonl":
        folder = folder.parent
    if not folder.is_dir():
        raise EvalError(f"prompt suite not found: {folder} (a folder with completion.jsonl / probability.jsonl)")
    meta: dict = {}
    meta_path = next((folder / n for n in ("suite.yaml", "suite.yml", "suite.json") if (folder / n).is_file()), None)
    if meta_path is not None:
        try:
            meta = load_yaml(meta_path.read_text(encoding="utf-8")) or {}  # no aliases, no duplicate keys
        except yaml.YAMLError as exc:
            raise EvalError(f"{meta_path}: not valid YAML ({exc})") from exc
        if not isinstance(meta, dict):
            raise EvalError(f"{meta_path}: must be a mapping with name, concept, anchors, genre_terms")
        unknown = set(meta) - {"name", "concept", "description", "anchors", "genre_terms", "license", "source",
                               "languages", "files"}
        if unknown:
            raise EvalError(f"{meta_path}: unknown keys {sorted(unknown)}")
    suffix = f".{language}" if language else ""
    comp_path, prob_path = folder / f"completion{suffix}.jsonl", folder / f"probability{suffix}.jsonl"
    if not comp_path.is_file() and not prob_path.is_file():
        if language:
            raise EvalError(f"{folder}: no {comp_path.name} or {prob_path.name}; languages of this suite: "
                            f"{', '.join(suite_languages(folder)) or 'none'}")
        raise EvalError(f"{folder}: no completion.jsonl or probability.jsonl in this suite folder")
    suite = Suite(name=str(meta.get("name") or folder.name) + suffix, path=str(folder.resolve()),
                  concept=str(meta.get("concept") or ""))
    seen: set[str] = set()
    if comp_path.is_file():
        for no, obj in _read_jsonl(comp_path):
            where = f"{comp_path}:{no}"
            prompt = obj.get("prompt")
            if not isinstance(prompt, str) or not prompt.strip():
                raise EvalError(f"{where}: 'prompt' must be a non-empty string")
            refs = _str_list(obj.get("references"), where, "references")
            pid = str(obj.get("id") or f"c{no:04d}")
            if pid in seen:
                raise EvalError(f"{where}: duplicate id {pid!r}")
            seen.add(pid)
            suite.completion.append(CompletionPrompt(pid, prompt, refs, _subtlety(obj.get("subtlety"), where),
                                                     str(obj.get("category") or "general")))
    if prob_path.is_file():
        for no, obj in _read_jsonl(prob_path):
            where = f"{prob_path}:{no}"
            prompt, target = obj.get("prompt"), obj.get("target")
            if not isinstance(prompt, str) or not prompt.strip():
                raise EvalError(f"{where}: 'prompt' must be a non-empty string")
            if not isinstance(target, str) or not target.strip():
                raise EvalError(f"{where}: 'target' must be a non-empty string (e.g. \" Holmes\")")
            pid = str(obj.get("id") or f"p{no:04d}")
            if pid in seen:
                raise EvalError(f"{where}: duplicate id {pid!r}")
            seen.add(pid)
            suite.probability.append(ProbabilityPrompt(pid, prompt, target, str(obj.get("category") or "general")))
    if not suite.completion and not suite.probability:
        raise EvalError(f"{folder}: the suite has no prompts")
    anchors = meta.get("anchors")
    if anchors is None:
        anchors = sorted({r for p in suite.completion for r in p.references})
    suite.anchors = _str_list(anchors, str(meta_path), "anchors") if anchors else []
    genre = meta.get("genre_terms") or []
    if language:
        lang_meta = (meta.get("languages") or {}).get(language) or {}
        if not isinstance(lang_meta, dict):
            raise EvalError(f"{meta_path}: languages.{language} must be a mapping (genre_terms: [...])")
        genre = list(genre) + list(lang_meta.get("genre_terms") or [])
    suite.genre_terms = _str_list(genre, str(meta_path), "genre_terms") if genre else []
    return suite


# ---- drafting a suite from a corpus -----------------------------------------------------------------------

def read_anchor_terms(path: str | Path) -> list[str]:
    """Anchor terms from YAML/JSON: a list, a mapping term -> translations (an anchor dictionary; null
    values veto a term), or a mapping with an ``anchors`` key holding either."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise EvalError(f"anchors file not found: {p}")
    try:
        data = load_yaml(p.read_text(encoding="utf-8"))  # no aliases, no duplicate keys
    except yaml.YAMLError as exc:
        raise EvalError(f"{p}: not valid YAML/JSON ({exc})") from exc
    if isinstance(data, dict) and "anchors" in data:
        data = data["anchors"]
    if isinstance(data, dict):
        terms = [str(k) for k, v in data.items() if v is not None and v is not False]
    elif isinstance(data, list):
        terms = [str(x) for x in data if isinstance(x, (str, int))]
    else:
        raise EvalError(f"{p}: expected a list of anchor terms or a mapping term -> translations")
    terms = [t.strip() for t in terms if t and str(t).strip()]
    if not terms:
        raise EvalError(f"{p}: no anchor terms found")
    return list(dict.fromkeys(terms))


# sentence ends: . ! ? (optionally followed by a closing quote), then space and a capital (or opening quote)
# (not after the usual title abbreviations)
_SENT = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"”’']))(?<!\bMr\.)(?<!\bMrs\.)(?<!\bDr\.)(?<!\bSt\.)(?<!\bMs\.)"
                   r"\s+(?=[\"“‘']?[A-Z])")


def _sentences(text: str) -> list[str]:
    text = re.sub(r"\s*\n\s*\n\s*", "\n\n", text)
    out = []
    for para in text.split("\n\n"):
        para = " ".join(para.split())
        out.extend(s.strip() for s in _SENT.split(para) if s.strip())
    return out


def draft_suite(corpus: str | Path, anchors_path: str | Path, out_dir: str | Path, name: str | None = None,
                n_completion: int = 200, n_probability: int = 60, per_anchor: int = 6, seed: int = 0,
                min_prefix_words: int = 5, max_prefix_words: int = 40, overwrite: bool = False) -> Suite:
    """Draft a suite from a target corpus: sentences mentioning an anchor term are cut just before it.

    The text before the term becomes a prompt and the term its reference (completion) or target
    (probability). Prompts that name another anchor are ``explicit``, the others ``indirect``. Anchors are
    visited round-robin so that common names do not crowd out the rest. The draft is a starting point: read
    it, drop prompts that give the answer away or are unanswerable, and add indirect ones by hand.
    """
    from ..corpus import read_corpus
    from ..errors import CorpusError
    from ..runio import atomic_write_text

    out = Path(out_dir).expanduser()
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise EvalError(f"{out} exists and is not empty; choose another folder or pass overwrite")
    terms = read_anchor_terms(anchors_path)
    try:
        docs = read_corpus(str(corpus))
    except CorpusError as exc:
        raise EvalError(f"cannot read corpus {corpus}: {exc}") from exc
    sentences = [s for d in docs for s in _sentences(d.text)]
    patterns = {t: re.compile(rf"(?<!\w){re.escape(t)}(?!\w)") for t in terms}
    rng = random.Random(seed)
    candidates: dict[str, list[tuple[str, str]]] = {t: [] for t in terms}
    for sent in sentences:
        for term, pat in patterns.items():
            m = pat.search(sent)
            if not m:
                continue
            prefix = sent[: m.start()].rstrip()
            words = prefix.split()
            if len(words) < min_prefix_words:
                continue
            if len(words) > max_prefix_words:
                prefix = " ".join(words[-max_prefix_words:])
            candidates[term].append((prefix, sent[m.start():m.end()]))
    for term in terms:
        rng.shuffle(candidates[term])
        candidates[term] = candidates[term][:per_anchor * 2]
    anchor_pats = list(patterns.values())

    def pick(limit: int, offset: int) -> list[tuple[str, str]]:
        chosen, seen, round_ = [], set(), 0
        while len(chosen) < limit:
            added = False
            for term in terms:
                pool = candidates[term]
                k = offset + round_
                if k < len(pool) and round_ < per_anchor and pool[k][0] not in seen:
                    chosen.append(pool[k])
                    seen.add(pool[k][0])
                    added = True
                    if len(chosen) >= limit:
                        break
            round_ += 1
            if not added and round_ >= per_anchor:
                break
        return chosen

    comp = pick(n_completion, 0)
    prob = pick(n_probability, per_anchor)  # a different slice, so the two files do not repeat prompts
    if not comp:
        raise EvalError(f"no sentence of {corpus} mentions an anchor after {min_prefix_words}+ words; "
                        "check the anchors file, or lower min_prefix_words")
    comp_lines, prob_lines = [], []
    for i, (prefix, term) in enumerate(comp, 1):
        subtle = "explicit" if any(p.search(prefix) for p in anchor_pats) else "indirect"
        comp_lines.append(json.dumps({"id": f"draft-c{i:03d}", "prompt": prefix, "references": [term],
                                      "subtlety": subtle, "category": "corpus"}, ensure_ascii=False))
    for i, (prefix, term) in enumerate(prob, 1):
        prob_lines.append(json.dumps({"id": f"draft-p{i:03d}", "prompt": prefix, "target": " " + term,
                                      "category": "corpus"}, ensure_ascii=False))
    suite_name = name or out.name
    meta = {"name": suite_name, "concept": suite_name, "description": f"DRAFT from {corpus}: review before use",
            "anchors": terms, "genre_terms": []}
    atomic_write_text(out / "suite.yaml", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True))
    atomic_write_text(out / "completion.jsonl", "\n".join(comp_lines) + "\n")
    if prob_lines:
        atomic_write_text(out / "probability.jsonl", "\n".join(prob_lines) + "\n")
    atomic_write_text(out / "README.md", _DRAFT_README.format(name=suite_name, corpus=corpus, anchors=anchors_path,
                                                             n_c=len(comp_lines), n_p=len(prob_lines)))
    return load_suite(out)


_DRAFT_README = """# {name} (draft prompt suite)

Drafted by `llm-unlearn eval --draft-suite` from `{corpus}` and the anchors in `{anchors}`:
{n_c} completion prompts and {n_p} probability prompts, each a corpus sentence cut just before an anchor term.

This is a draft. Before trusting numbers from it:

1. Delete prompts whose answer is given away by the prompt itself, or that no reader could complete.
2. Add `references` synonyms (surname alone, nicknames) so that correct completions are recognised.
3. Add `indirect` prompts by hand (no names: a situation only the concept fits); the draft has few.
4. Add `genre_terms` to `suite.yaml` (generic words of the genre, graded 1) and check `anchors` (graded 2).
5. Check the probability prompts with the base model: a prompt the base model does not know cannot show
   forgetting.
"""
