"""Where every artifact of a run lives. Stages read and write only these paths."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunPaths:
    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    manifest = property(lambda s: s.root / "manifest.json")
    recipe = property(lambda s: s.root / "recipe.yaml")
    inputs = property(lambda s: s.root / "inputs")  # corpora / anchors given in memory through the API
    corpus_dir = property(lambda s: s.root / "corpus")
    blocks = property(lambda s: s.root / "corpus" / "blocks.jsonl")
    split = property(lambda s: s.root / "corpus" / "split.json")
    anchors_dir = property(lambda s: s.root / "anchors")
    anchors = property(lambda s: s.root / "anchors" / "anchors.yaml")
    reinforce_dir = property(lambda s: s.root / "reinforce")
    reinforce_weights = property(lambda s: s.root / "reinforce" / "adapter")
    labels_dir = property(lambda s: s.root / "labels")
    labels_dataset = property(lambda s: s.root / "labels" / "dataset")
    labels_stats = property(lambda s: s.root / "labels" / "stats.json")
    finetune_dir = property(lambda s: s.root / "finetune")
    finetune_weights = property(lambda s: s.root / "finetune" / "adapter")
    unlearn_dir = property(lambda s: s.root / "unlearn")  # the baselines' training stage (methods other than whp)
    unlearn_weights = property(lambda s: s.root / "unlearn" / "adapter")
    export_dir = property(lambda s: s.root / "export")
    export_model = property(lambda s: s.root / "export" / "model")
    export_adapter = property(lambda s: s.root / "export" / "adapter")
    eval_dir = property(lambda s: s.root / "eval")

    def stage_dir(self, stage: str) -> Path:
        return self.root / stage


# ---- what a run directory may hold (rules T3, T9, T10 of llm_unlearn.pipeline) ------------------------------------
# Not recorded as outputs: the trainers' resume checkpoints (removed when a stage finishes) and their logs
UNRECORDED = {"checkpoints", "runs"}
_HASH_EDGE = 1 << 16  # bytes hashed at each end of a file
_STALE = re.compile(r"^\..+\.(tmp|old|aside)$")  # atomic_dir / atomic_write temporaries, stage folders moved aside


def file_record(path: Path) -> list:
    """[size, hash of the size and the first and last 64 KiB] of a file: cheap on a model of many GB, and enough to
    notice a file that was deleted, truncated, rewritten or replaced."""
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as fh:
        h.update(fh.read(_HASH_EDGE))
        if size > 2 * _HASH_EDGE:
            fh.seek(size - _HASH_EDGE)
            h.update(fh.read(_HASH_EDGE))
        elif size > _HASH_EDGE:
            h.update(fh.read())
    return [size, h.hexdigest()[:16]]


def stage_files(stage_dir: Path) -> dict[str, list]:
    """Rule T9: {path relative to the stage folder: file_record} of every file a stage left (links not followed)."""
    out: dict[str, list] = {}
    if not stage_dir.is_dir():
        return out
    for dirpath, dirnames, filenames in os.walk(stage_dir):
        here = Path(dirpath)
        if here == stage_dir:
            dirnames[:] = [d for d in dirnames if d not in UNRECORDED and not d.startswith(".")]
            filenames = [f for f in filenames if not f.startswith(".")]
        for name in filenames:
            path = here / name
            if not path.is_symlink() and path.is_file():
                out[str(path.relative_to(stage_dir))] = file_record(path)
    return dict(sorted(out.items()))


def changed_files(stage_dir: Path, recorded: dict) -> list[str]:
    """Rule T9: the recorded files of a finished stage that are gone or differ now."""
    changed = []
    for rel, record in recorded.items():
        path = stage_dir / rel
        try:
            ok = isinstance(record, list) and not path.is_symlink() and path.is_file() and file_record(path) == record
        except OSError:
            ok = False
        if not ok:
            changed.append(rel)
    return changed


def links_in(path: Path) -> list[Path]:
    """Rule T3: ``path`` itself when it is a symbolic link, else every link inside it (links are not followed)."""
    if path.is_symlink():
        return [path]
    found = []
    if path.is_dir():
        for dirpath, dirnames, filenames in os.walk(path):
            found += [Path(dirpath) / n for n in dirnames + filenames if (Path(dirpath) / n).is_symlink()]
    return found


def remove_stale_temporaries(root: Path, folders) -> list[Path]:
    """Rule T10: remove what a killed run left (``.NAME.XXXX.tmp``, ``.NAME.old``, ``.STAGE.aside``) in the run
    directory and in its stage folders. Call only under the run's lock. A link is removed as a link."""
    removed = []
    for folder in [root, *folders]:
        if folder.is_symlink() or not folder.is_dir():
            continue
        for item in folder.iterdir():
            if not _STALE.match(item.name):
                continue
            if item.is_dir() and not item.is_symlink():
                shutil.rmtree(item, ignore_errors=True)
            else:
                item.unlink(missing_ok=True)
            removed.append(item)
    return removed
