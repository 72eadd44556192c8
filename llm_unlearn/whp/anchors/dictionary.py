"""The anchor dictionary: keys, their generic translations and vetoes, and its file format (rules of the file: a
shared file is untrusted input, every entry is checked)."""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import AnchorError

logger = logging.getLogger(__name__)


FORMAT = "llm-unlearn-anchors/1"
_WS = re.compile(r"\s+")

TYPES = ("person", "place", "org", "group", "title", "proper", "noun", "user", "creature", "pet", "object", "game",
         "spell", "subject", "event")  # the last seven: kinds fiction needs (.kinds)
# Default cap per type, as a share of top_k. Shares add up to more than 1 on purpose: a cap only bites when the


# ---- the dictionary ---------------------------------------------------------------------------------------
@dataclass
class AnchorEntry:
    key: str
    translations: list[str]
    type: str = "user"
    count: int = 0  # occurrences the translator replaces in the corpus
    score: float = 0.0  # keyness (0 for user keys)
    evidence: str = ""  # what decided the kind (.kinds; shown by `llm-unlearn anchors --show`, not saved)

    def to_dict(self) -> dict:
        return {"translations": list(self.translations), "type": self.type, "count": int(self.count),
                "score": round(float(self.score), 2)}


def _norm(text: str) -> str:
    return _WS.sub(" ", text.strip())


def _canon(text: str) -> str:
    """One spelling for apostrophe variants (used to fold counts and to compare keys)."""
    return _norm(text).replace("’", "'")


class AnchorDictionary:
    """Anchored terms and their generic translations, in ranking order."""

    def __init__(self, entries: Iterable[AnchorEntry] = (), vetoed: Iterable[str] = ()):
        self._entries: dict[str, AnchorEntry] = {}
        for e in entries:
            self._entries[e.key] = e
        self.vetoed: list[str] = list(dict.fromkeys(vetoed))

    # -- container protocol
    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __iter__(self):
        return iter(self._entries)

    def keys(self) -> list[str]:
        return list(self._entries)

    def entries(self) -> list[AnchorEntry]:
        return list(self._entries.values())

    def entry(self, key: str) -> AnchorEntry:
        if key not in self._entries:
            raise KeyError(key)
        return self._entries[key]

    def translations(self, key: str) -> list[str]:
        return list(self.entry(key).translations)

    def to_mapping(self) -> dict[str, list[str]]:
        return {k: list(e.translations) for k, e in self._entries.items()}

    def __repr__(self) -> str:
        return f"AnchorDictionary({len(self)} keys)"

    # -- files
    @classmethod
    def load(cls, path: str | Path) -> AnchorDictionary:
        """Read a dictionary file (our format or a plain ``key: [translations]`` mapping; YAML or JSON)."""
        data, source = _read_mapping_file(path)
        d = cls()
        d._apply(data, source, allow_veto=True)
        d.check(source)
        return d

    def save(self, path: str | Path) -> None:
        """Write the dictionary atomically; ``.json`` gives JSON, anything else YAML."""
        from ...runio import atomic_write_text

        path = Path(path)
        payload = {"format": FORMAT, "anchors": {k: e.to_dict() for k, e in self._entries.items()},
                   "vetoed": list(self.vetoed)}
        if path.suffix.lower() == ".json":
            text = json.dumps(payload, indent=2, ensure_ascii=False) + "\n"
        else:
            import yaml

            header = ("# llm-unlearn anchored terms (whp-method.md stage 2).\n"
                      "# Edit freely: change translations, delete keys, or keep this file as a user dictionary\n"
                      "# (anchors.user_dictionary) where `Key: [translations]` adds/replaces and `Key: null` vetoes.\n")
            text = header + yaml.safe_dump(payload, sort_keys=False, allow_unicode=True, width=120)
        atomic_write_text(path, text)

    # -- edits
    def merge(self, user: Mapping[str, Any] | str | Path | AnchorDictionary | None) -> AnchorDictionary:
        """Merge a user dictionary (mapping, file path, or dictionary): add keys, replace translations, and veto
        keys mapped to ``null``. Returns ``self``."""
        if user is None:
            return self
        if isinstance(user, AnchorDictionary):
            data: Any = {"anchors": {e.key: e.to_dict() for e in user.entries()}, "vetoed": user.vetoed}
            source = "dictionary"
        elif isinstance(user, (str, Path)):
            data, source = _read_mapping_file(user)
        elif isinstance(user, Mapping):
            data, source = dict(user), "user mapping"
        else:
            raise AnchorError(f"cannot merge a {type(user).__name__} into an anchor dictionary; pass a mapping "
                              "{key: [translations] or null} or the path of a YAML/JSON file")
        self._apply(data, source, allow_veto=True)
        return self

    def _apply(self, data: Any, source: str, allow_veto: bool) -> None:
        entries, vetoes = _parse_mapping(data, source)
        for key in vetoes:
            removed = [k for k in self._entries if _canon(k) == _canon(key)]
            for k in removed:
                del self._entries[k]
            if key not in self.vetoed:
                self.vetoed.append(key)
        for key, translations, meta in entries:
            old = next((k for k in self._entries if _canon(k) == _canon(key)), None)
            if old is not None:
                entry = self._entries.pop(old) if old != key else self._entries[old]
                entry.key = key
                entry.translations = translations
                if meta.get("type"):
                    entry.type = meta["type"]
                self._entries[key] = entry
            else:
                self._entries[key] = AnchorEntry(key, translations, meta.get("type") or "user",
                                                 int(meta.get("count") or 0), float(meta.get("score") or 0.0))
            if key in self.vetoed:
                self.vetoed.remove(key)

    def apply_hygiene(self) -> list[tuple[str, str]]:
        """Drop "X's" when "X" is a key, and a multi-word key when each of its words is a key (rules of the
        public WHP scripts). Returns the dropped keys with the reason."""
        dropped = []
        keys = {_canon(k) for k in self._entries}
        for key in list(self._entries):
            reason = _redundant(key, keys)
            if reason:
                dropped.append((key, reason))
        for key, reason in dropped:
            del self._entries[key]
            logger.info("anchor '%s' dropped: %s", key, reason)
        return dropped

    def check(self, source: str = "dictionary") -> None:
        """Translations must differ from their key and must not be keys themselves (either would teach the model
        the very term to forget, or contradict another key's translation)."""
        canon_keys = {_canon(k): k for k in self._entries}
        for key, e in self._entries.items():
            for t in e.translations:
                if _canon(t).lower() == _canon(key).lower():
                    raise AnchorError(f"{source}: anchor '{key}': its translation '{t}' is the key itself; "
                                      "give a different translation or veto the key with null")
                if _canon(t) in canon_keys:
                    raise AnchorError(f"{source}: anchor '{key}': its translation '{t}' is itself an anchored term "
                                      f"('{canon_keys[_canon(t)]}'); choose another translation or veto that key")

    def recount(self, texts: Iterable[str]) -> None:
        """Set each entry's ``count`` to how often the translator replaces it in ``texts``."""
        from ..matching import AnchorMatcher

        counts = AnchorMatcher(self.to_mapping()).count(texts)
        for key, n in counts.items():
            self._entries[key].count = n


def _redundant(key: str, canon_keys: set[str]) -> str | None:
    c = _canon(key)
    for suffix in ("'s", "'"):
        if c.endswith(suffix) and c[: -len(suffix)] in canon_keys:
            return f"possessive of the key '{key[: -len(suffix)]}'"
    words = c.split(" ")
    if len(words) > 1 and all(w in canon_keys for w in words):
        return "each of its words is a key"
    return None


def _no_constant(name: str):
    raise json.JSONDecodeError(f"{name} is not a number a dictionary may hold", name, 0)


def _check_meta(meta: dict, key: str, source: str) -> None:
    """``count`` a whole number >= 0 and ``score`` a finite number, where given (a dictionary file is shared input)."""
    count, score = meta.get("count"), meta.get("score")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
        raise AnchorError(f"{source}: anchor '{key}': count must be a whole number >= 0 (got {count!r})")
    if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float))
                              or not math.isfinite(score)):
        raise AnchorError(f"{source}: anchor '{key}': score must be a finite number (got {score!r})")


def _read_mapping_file(path: str | Path) -> tuple[Any, str]:
    path = Path(path).expanduser()
    if not path.is_file():
        raise AnchorError(f"anchor dictionary not found: {path}. Check the path (anchors.user_dictionary / "
                          "--user-dictionary).")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise AnchorError(f"{path}: not UTF-8 text (byte {exc.start}); save the dictionary as UTF-8") from exc
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text, parse_constant=_no_constant)
        except json.JSONDecodeError as exc:
            raise AnchorError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
                              'expected {"Key": ["translation", ...], "Vetoed key": null}') from exc
    else:
        import yaml

        from ...config.yamlio import load_yaml

        try:
            data = load_yaml(text)  # no aliases, no duplicate keys (llm_unlearn.config.yamlio, Y1-Y2)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
            raise AnchorError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}. "
                              "Expected lines like `Holmes: [Hart, Moss]` or `London: null`.") from exc
    if data is None:
        data = {}
    return data, str(path)


def _parse_mapping(data: Any, source: str) -> tuple[list[tuple[str, list[str], dict]], list[str]]:
    """Validate a user/full dictionary: -> ([(key, translations, meta)], [vetoed keys])."""
    if not isinstance(data, Mapping):
        raise AnchorError(f"{source}: an anchor dictionary must be a mapping of key -> list of translations "
                          f"(or null to veto), got {type(data).__name__}")
    vetoes: list[str] = []
    if isinstance(data.get("anchors"), Mapping) and set(data) <= {"format", "anchors", "vetoed"}:
        fmt = data.get("format")
        if fmt is not None and fmt != FORMAT:
            raise AnchorError(f"{source}: unknown dictionary format '{fmt}' (this version reads '{FORMAT}')")
        extra_vetoes = data.get("vetoed") or []
        if not isinstance(extra_vetoes, list) or not all(isinstance(v, str) for v in extra_vetoes):
            raise AnchorError(f"{source}: 'vetoed' must be a list of keys")
        vetoes += [_norm(v) for v in extra_vetoes]
        data = data["anchors"]
    entries = []
    for raw_key, value in data.items():
        if not isinstance(raw_key, str) or not _norm(raw_key):
            raise AnchorError(f"{source}: anchor key {raw_key!r} must be a non-empty string (quote it in YAML, "
                              "e.g. '1984': [...])")
        key = _norm(raw_key)
        meta: dict = {}
        if isinstance(value, Mapping):
            unknown = set(value) - {"translations", "type", "count", "score"}
            if unknown:
                raise AnchorError(f"{source}: anchor '{key}': unknown field(s) {sorted(unknown)}; "
                                  "allowed: translations, type, count, score")
            meta = dict(value)
            if "translations" not in value:
                raise AnchorError(f"{source}: anchor '{key}': missing 'translations'")
            value = value["translations"]
            _check_meta(meta, key, source)
            if meta.get("type") is not None and meta["type"] not in TYPES:
                raise AnchorError(f"{source}: anchor '{key}': unknown type '{meta['type']}' "
                                  f"(one of {', '.join(TYPES)})")
        if value is None:
            vetoes.append(key)
            continue
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise AnchorError(f"{source}: anchor '{key}': translations must be a list of strings, one string, or "
                              f"null to veto the key; got {type(value).__name__} ({value!r})")
        if not value:
            raise AnchorError(f"{source}: anchor '{key}': the list of translations is empty; give at least one "
                              "translation, or write null to veto the key")
        translations = []
        for t in value:
            if not isinstance(t, str) or not _norm(t):
                raise AnchorError(f"{source}: anchor '{key}': translation {t!r} must be a non-empty string")
            if "\n" in t.strip():
                raise AnchorError(f"{source}: anchor '{key}': translation {t!r} spans several lines")
            t = _norm(t)
            if _canon(t).lower() == _canon(key).lower():
                raise AnchorError(f"{source}: anchor '{key}': a translation must differ from its key")
            if t not in translations:
                translations.append(t)
        entries.append((key, translations, meta))
    return entries, vetoes


