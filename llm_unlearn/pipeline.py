"""The pipeline: stages tied together in a run directory with a manifest.

Stages, in order (each a function from artifacts on disk to artifacts on disk), as the recipe's method declares
them (:mod:`llm_unlearn.methods`); WHP's:

    corpus -> anchors ----------\\
           \\-> reinforce --------> labels -> finetune -> export -> eval (-> attack, when attack.enabled)

and the baselines' (grad_ascent, grad_diff, npo, simnpo, rmu): corpus -> unlearn -> export -> eval.

``manifest.json`` records per stage: status, a fingerprint (hash of the recipe sections it reads and of its
upstream stages' fingerprints, plus the corpus file's identity), timings, outputs and metrics. On a rerun a
stage is skipped when it is done and its fingerprint is unchanged; a changed fingerprint redoes it and, through
the fingerprints, everything downstream; an interrupted stage resumes (the trainers restart from their last
checkpoint); a finished stage whose recorded outputs were deleted is rerun, with everything after it. A finished
run is never overwritten unless asked (``overwrite=True``), and one run at a time holds the directory's lock.

Trust and replacement rules (what a run directory, a file people share, may cause):

T2. ``model.trust_remote_code`` in a recipe file (a run directory's ``recipe.yaml`` included) is ignored
    (:mod:`llm_unlearn.config`); it is not part of any fingerprint, so a run started with the flag resumes without it.
T3. Nothing is written or deleted through a symbolic link: a stage folder (or a file or folder in it, or
    ``manifest.json``, ``recipe.yaml``, ``inputs``) that is a link stops the run before anything changes; every
    deletion is of a path inside the run directory.
T5. Replace, never destroy first: a stage that is redone or rerun has its old folder moved aside, and the old one is
    put back (with its manifest entries and the earlier ``recipe.yaml``) when the new one fails; it is deleted only
    when the new one succeeded. The checks that need no stage (the model spec, the model's context length against
    ``corpus.block_size``, the corpus paths, the judge / chat endpoints, ``--out``) run before any stage, in
    ``--dry-run`` too.
T9. The manifest records every file a finished stage wrote (size and a hash of its first and last 64 KiB); a stage
    whose files differ from the record (deleted, truncated, replaced) is rerun, with everything after it.
T10. Temporary files and folders left by a killed run (``.NAME.*.tmp``, ``.NAME.old``, a stage folder moved aside)
    are removed by the next run, under the lock; a finished stage's files get the permissions of the user's umask.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import json
import logging
import os
import pickle
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from .config import REMOVED_OPTIONS, TARGET_RISE_SETTINGS, Recipe
from .errors import RecipeError, RunDirError
from .methods import DEFAULT_METHOD, get_method
from .methods.base import StageSpec, needs_retain_text
from .rundir import RunPaths, changed_files, links_in, remove_stale_temporaries, stage_files
from .runio import RunLock, atomic_write_json, atomic_write_text, share_like_umask

logger = logging.getLogger(__name__)


# ---- the thin stages (the heavy ones live in their own modules) -------------------------------------------
def run_eval(run: RunPaths, recipe: Recipe, progress: bool = True) -> dict:
    """export/model (+ the base model) -> eval/eval.json, report.md, plots; the model card gets the table."""
    if not recipe.eval.enabled:
        return {"skipped": "eval.enabled is false"}
    from .corpus import read_blocks, read_split
    from .evaluation import evaluate
    from .export import update_card_with_eval

    blocks = read_blocks(run.blocks)
    split = read_split(run)
    heldout = [blocks[i].text for i in split["validation"]]
    if recipe.eval.generic_floor and not run.anchors.is_file():
        # floor rule F7 (llm_unlearn.whp.floor): a method without an anchors stage (the baselines) builds the
        # anchor dictionary here, as WHP's anchors stage would, so every method is scored beside the same floor
        from .whp.anchors.stage import run_anchors

        run_anchors(run, recipe, progress)
    result = evaluate({"base": recipe.model.spec, "unlearned": str(run.export_model)}, recipe.eval, run.eval_dir,
                      target_heldout=heldout, baseline="base",
                      floor_dictionary=run.anchors if recipe.eval.generic_floor else None)
    report = run.eval_dir / "report.md"
    if report.exists():
        update_card_with_eval(run, recipe, report.read_text())
    return {"eval_json": str(run.eval_dir / "eval.json"), "summary": result.get("summary", {})}


def run_attack(run: RunPaths, recipe: Recipe, progress: bool = True) -> dict:
    """export/model (+ the base model) -> attack/attack.json, report.md, plot (only when attack.enabled)."""
    if not recipe.attack.enabled:
        return {"skipped": "attack.enabled is false"}
    from .attacks import attack_run

    doc = attack_run(run.root, recipe, progress=progress)
    return {"attack_json": str(run.root / "attack" / "attack.json"), "summary": doc.get("summary", {})}


def _stage_fn(stage: StageSpec) -> Callable:
    module, name = stage.function.split(":")
    return getattr(importlib.import_module(module), name)


Stage = StageSpec  # the stage record (kept under its old name)
# Settings added after runs existed, with the value that means "off": left out of the stage hashes while off, so
# those runs keep their fingerprints (and are not recomputed) after an upgrade
ADDED_SETTINGS = {("corpus", "relearn_fraction"): 0.0, ("finetune", "sam_rho"): 0.0,
                  ("finetune", "disruption_mask"): False, ("finetune", "cir_components"): 0,
                  ("finetune", "meta_relearn_step"): 0.0,
                  ("finetune", "quantization_aware"): None,
                  ("labels", "rise_tokens"): "all", ("labels", "rise_keyness"): 5.0,
                  **{("labels", name): off for name, off in TARGET_RISE_SETTINGS.items()},
                  ("eval", "generic_floor"): False,
                  # the former dictionary (spaCy's labels as kinds, period words kept): runs made before keep theirs
                  ("anchors", "kinds"): "ner", ("anchors", "period_words"): False}

# Options removed since runs existed (llm_unlearn.config.REMOVED_OPTIONS) that those runs hashed at their "off" value:
# put back into the hash payload, so the runs keep their fingerprints
REMOVED_HASHED = {key: REMOVED_OPTIONS[key][0] for key in (("finetune", "neighbour_texts"),
                                                           ("finetune", "position_weighting"),
                                                           ("labels", "position_weight"))}

# WHP's stage table (the default method); a Pipeline uses its recipe's method's table (llm_unlearn.methods)
STAGES: dict[str, StageSpec] = {s.name: s for s in get_method(DEFAULT_METHOD).stages}
ORDER = list(STAGES)


def _files_identity(paths) -> str:
    """Identity of input files: a content hash of each file (of every file in a folder).

    Content, not mtime: a copied or re-mounted corpus keeps its finished stages (hashing runs at ~1 GB/s)."""
    parts = []
    for path in paths:
        if not path or not Path(path).exists():
            parts.append(str(path))
            continue
        p = Path(path)
        for f in (sorted(p.rglob("*")) if p.is_dir() else [p]):
            if f.is_file():
                h = hashlib.sha256()
                with open(f, "rb") as fh:
                    for chunk in iter(lambda: fh.read(1 << 22), b""):
                        h.update(chunk)
                parts.append(f"{f.relative_to(p) if p.is_dir() else f.name}:{h.hexdigest()[:16]}")
    return ";".join(parts)


def _stage_input_files(recipe: Recipe, name: str) -> list:
    """Files a stage reads besides the artifacts of the stages before it: editing one redoes the stage."""
    if name == "corpus":
        return [recipe.corpus.path, *recipe.corpus.extra_paths]
    if name == "anchors" and (recipe.anchors.user_dictionary or recipe.anchors.kind_labels):
        return [p for p in (recipe.anchors.user_dictionary, recipe.anchors.kind_labels) if p]
    if name in ("finetune", "unlearn") and needs_retain_text(recipe):
        from .retain import retain_paths

        return retain_paths(recipe)
    return []


class Pipeline:
    """Runs the stages of a recipe in a run directory, recording everything in ``manifest.json``."""

    def __init__(self, recipe: Recipe, run_dir: str | Path, overwrite: bool = False, progress: bool = True):
        recipe.validate()  # every field of every section, before any stage runs (--dry-run included)
        if recipe.corpus.path is None:
            raise RecipeError("no corpus: set corpus.path in the recipe, or add --set corpus.path=PATH")
        self.recipe, self.run, self.overwrite, self.progress = recipe, RunPaths(run_dir), overwrite, progress
        self.method = get_method(recipe.method)
        self.stages: dict[str, StageSpec] = {s.name: s for s in self.method.stages}  # the method's stage table
        self.order = list(self.stages)
        from .preflight import check_out

        check_out(self.run.root)  # a path the OS can look up (rule T5, P1)
        if self.run.root.exists() and not self.run.root.is_dir():
            raise RunDirError(f"--out {self.run.root} is a file, not a directory: choose another --out")
        self._input_ids: dict[str, str] = {}  # stage -> identity of its input files, hashed once per Pipeline
        self._finished_here, self._recipe_before = False, None  # rule T5 (set per run_stages call)
        from .training import process_state

        self.state = process_state()

    # ---- manifest ----------------------------------------------------------------------------------------
    def load_manifest(self) -> dict:
        if not self.run.manifest.exists():
            return {"stages": {}}
        try:
            manifest = json.loads(self.run.manifest.read_text(encoding="utf-8"))
            ok = isinstance(manifest, dict) and isinstance(manifest.get("stages"), dict) and all(
                isinstance(e, dict) and isinstance(e.get("status"), str) and isinstance(e.get("fingerprint"), str)
                and isinstance(e.get("outputs", []), list) and all(isinstance(o, str) for o in e.get("outputs", []))
                and isinstance(e.get("files", {}), dict) and isinstance(e.get("attempts", 0), int)
                for e in manifest["stages"].values())
        except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
            ok, manifest = False, exc
        if not ok:
            raise RunDirError(
                f"{self.run.manifest} is damaged ({manifest if isinstance(manifest, Exception) else 'not a manifest'})"
                f": the run directory was changed outside llm-unlearn. Restore manifest.json, or start over: "
                f"delete {self.run.root} (or use a new --out) and run again"
            )
        return manifest

    def _outputs_missing(self, entry: dict) -> list[str]:
        """Recorded outputs of a finished stage that are gone (deleted or emptied since)."""
        missing = []
        for rel in entry.get("outputs") or []:
            path = self.run.root / rel
            if not path.exists() or (path.is_dir() and not any(path.iterdir())):
                missing.append(rel)
        return missing

    def _outputs_changed(self, name: str, entry: dict) -> bool:
        """Rule T9: a finished stage's recorded files differ now (manifests from before the file records: a
        recorded output is gone or empty)."""
        if isinstance(entry.get("files"), dict):
            return bool(changed_files(self.run.stage_dir(name), entry["files"]))
        return bool(self._outputs_missing(entry))

    def _save_manifest(self, manifest: dict) -> None:
        if self.state.is_main_process:
            atomic_write_json(self.run.manifest, manifest, strict=True)  # no NaN / Infinity

    def fingerprints(self) -> dict[str, str]:
        fps: dict[str, str] = {}
        for name in self.order:
            stage = self.stages[name]
            parts = [name, self._config_hash(stage)] + [fps[d] for d in stage.depends]
            if name not in self._input_ids:  # hashing reads the whole corpus: once per Pipeline, not per plan
                self._input_ids[name] = _files_identity(_stage_input_files(self.recipe, name))
            if self._input_ids[name]:
                parts.append(self._input_ids[name])
            fps[name] = hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]
        return fps

    def _config_hash(self, stage: Stage) -> str:
        """Hash of what a stage reads. Where the model is pushed is not part of what it computes."""
        data = self.recipe.to_dict()
        data["export"] = {k: v for k, v in data["export"].items() if k not in ("push_to_hub", "private")}
        data["model"]["trust_remote_code"] = False  # rule T2: who allowed the code is not what it computes
        # runs made before these settings existed keep their fingerprints while the settings are off
        for (section, key), off in ADDED_SETTINGS.items():
            if data[section].get(key) in (off, None):
                data[section].pop(key, None)
        for (section, key), off in REMOVED_HASHED.items():
            data[section][key] = off
        payload = {s: data[s] for s in stage.sections}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def plan(self, until: str = "eval") -> list[tuple[str, str]]:
        """What a run would do: [(stage, 'skip' | 'run' | 'resume' | 'redo' | 'rerun')].

        'rerun': the stage finished with this config but its outputs (or an earlier stage's) are gone."""
        manifest, fps = self.load_manifest(), self.fingerprints()
        if until == "eval" and self.recipe.attack.enabled:
            until = "attack"  # the attack stage runs after eval only when the recipe asks for it
        out: list[tuple[str, str]] = []
        if until not in self.stages:
            raise RecipeError(f"unknown stage '{until}' for method {self.method.name}; its stages: "
                              f"{', '.join(self.order)}")
        from .preflight import check_all

        check_all(self.recipe, self.run.root, self.order[: self.order.index(until) + 1])  # rule T5: before any stage
        for name in self.order[: self.order.index(until) + 1]:
            entry = manifest["stages"].get(name)
            if entry is None:
                action = "run"
            elif entry["fingerprint"] != fps[name]:
                action = "redo"
            elif entry["status"] == "done":
                # Done means the outputs are there too: deleted ones are made again (nothing to overwrite), and
                # so is every stage after it, which read the old ones.
                upstream_rerun = any(a == "rerun" and d in self._ancestors(name) for d, a in out)
                action = "rerun" if upstream_rerun or self._outputs_changed(name, entry) else "skip"
            else:
                action = "resume"
            out.append((name, action))
        return out

    # ---- running -------------------------------------------------------------------------------------------
    def _check_is_run_dir(self) -> None:
        root = self.run.root
        ours = {"inputs", ".lock", ".lock.holder"}
        if root.is_dir() and any(p.name not in ours for p in root.iterdir()) and not self.run.manifest.exists():
            raise RunDirError(f"{root} exists and is not an llm-unlearn run directory (no manifest.json); "
                              "choose another --out or empty it")

    def _check_run_dir(self, plan: list[tuple[str, str]]) -> None:
        root = self.run.root
        self._check_is_run_dir()
        manifest = self.load_manifest()
        finished = [n for n, e in manifest["stages"].items() if e.get("status") == "done"]
        redo = [n for n, a in plan if a == "redo" and n in finished]
        if redo and not self.overwrite:
            raise RunDirError(
                f"{root} holds finished results that this recipe would overwrite (changed config for stage(s): "
                f"{', '.join(redo)}). Pass --overwrite to redo them, or use a new --out directory."
            )

    def run_stages(self, until: str = "eval", only: str | None = None, prepare: Callable | None = None) -> dict:
        """Run every stage up to ``until`` (skipping finished, unchanged ones). Returns the manifest.

        ``prepare()`` runs once the lock is held, before anything else is read or written (the API writes the texts
        it was given into the run directory there)."""
        if until not in self.stages:
            raise RecipeError(f"unknown stage '{until}' for method {self.method.name}; its stages: "
                              f"{', '.join(self.order)}")
        self._check_is_run_dir()  # before the lock file is made in someone's folder
        lock = RunLock(self.run.root)
        if self.state.is_main_process:
            try:
                self.run.root.mkdir(parents=True, exist_ok=True)
                lock.acquire()  # before planning: a second run must not act on a plan the first one is changing
            except OSError as exc:
                raise RunDirError(f"cannot use {self.run.root} as a run directory: {exc.strerror or exc} "
                                  "(is it a file, or read-only?); choose another --out") from exc
        try:
            if prepare is not None and self.state.is_main_process:
                prepare()
            self.state.wait_for_everyone()
            return self._run_locked(until, only)
        finally:
            lock.release()

    def _check_links(self, plan: list[tuple[str, str]]) -> None:
        """Rule T3: nothing is written or deleted through a symbolic link."""
        root = self.run.root
        paths = [self.run.manifest, self.run.recipe, self.run.inputs]
        if any(a != "skip" for _, a in plan):  # a stage may write into an earlier one's folder (eval: the model card)
            paths += [self.run.stage_dir(n) for n in self.order]
        links = [link for path in paths for link in links_in(path)]
        if links:
            raise RunDirError(f"{links[0]} is a symbolic link{f' (and {len(links) - 1} more)' if len(links) > 1 else ''}"
                              f": llm-unlearn replaces the folders of the stages it runs in {root} and will not write "
                              "or delete through a link. Replace the link with a copy of what it points to, or use a "
                              "new --out")

    def _run_locked(self, until: str, only: str | None) -> dict:
        plan = self.plan(until)
        self._check_run_dir(plan)
        self._check_links(plan)
        if self.state.is_main_process:  # rule T10, under the lock: nobody else writes here
            for item in remove_stale_temporaries(self.run.root, [self.run.stage_dir(n) for n in self.order]):
                logger.info("removed %s, left by an interrupted run", item)
        self.state.wait_for_everyone()
        self._finished_here = False  # a stage of this call finished (rule T5: recipe.yaml is then kept)
        self._recipe_before = None
        # recipe.yaml describes the run's finished stages: a call that only skips (e.g. a sweep reading a shared
        # run's early stages with other later settings) must not rewrite it
        if self.state.is_main_process and any(action != "skip" for _, action in plan):
            try:
                if self.run.recipe.is_file():
                    self._recipe_before = self.run.recipe.read_text(encoding="utf-8")
                atomic_write_text(self.run.recipe, self.recipe.to_yaml())
            except OSError as exc:
                raise RunDirError(f"cannot write into {self.run.root}: {exc.strerror or exc} (read-only?); "
                                  "choose another --out") from exc
        self.state.wait_for_everyone()
        manifest, fps = self.load_manifest(), self.fingerprints()
        manifest.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%S"))
        manifest["recipe_name"] = self.recipe.name
        from . import __version__

        manifest["llm_unlearn_version"] = __version__
        for name, action in plan:
            if only and name != only and action != "skip" and not self._done(manifest, name, fps):
                raise RunDirError(f"stage '{only}' needs '{name}' first: run `llm-unlearn {name}` or `llm-unlearn run`")
            if action == "skip":
                logger.info("stage %-9s finished earlier, unchanged: skipped", name)
                continue
            self._run_stage(manifest, name, action, fps[name])
        if self.order.index(until) >= self.order.index("export"):
            self._maybe_push(manifest)
        return manifest

    def _maybe_push(self, manifest: dict) -> None:
        """Push the exported model when the recipe names a Hub repo and this export was not pushed there yet."""
        repo = self.recipe.export.push_to_hub
        export = manifest["stages"].get("export", {})
        if not repo or not self.state.is_main_process or export.get("status") != "done":
            return
        pushed = export.setdefault("pushed", {})
        if pushed.get(repo) == export["fingerprint"]:
            return
        from .export import push_to_hub

        export.setdefault("metrics", {})["hub_url"] = push_to_hub(self.run.export_model, repo, self.recipe.export.private)
        pushed[repo] = export["fingerprint"]
        self._save_manifest(manifest)

    @staticmethod
    def _done(manifest: dict, name: str, fps: dict) -> bool:
        e = manifest["stages"].get(name)
        return bool(e and e["status"] == "done" and e["fingerprint"] == fps[name])

    def _run_stage(self, manifest: dict, name: str, action: str, fingerprint: str) -> None:
        stage = self.stages[name]
        stage_dir = self.run.stage_dir(name)
        before = copy.deepcopy(manifest["stages"])
        aside = stage_dir.with_name(f".{name}.aside")  # rule T5: the old output, until the new one succeeds
        if action in ("redo", "rerun") and self.state.is_main_process and stage_dir.is_dir():
            shutil.rmtree(aside, ignore_errors=True)
            os.replace(stage_dir, aside)
        self.state.wait_for_everyone()
        logger.info("stage %-9s %s", name, {"run": "starting", "redo": "config changed: redoing",
                                             "resume": "interrupted earlier: resuming",
                                             "rerun": "outputs missing (or an earlier stage's rerun): rerunning"}[action])
        entry = {"status": "running", "fingerprint": fingerprint, "config_hash": self._config_hash(stage),
                 "inputs": list(stage.depends), "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                 "attempts": manifest["stages"].get(name, {}).get("attempts", 0) + 1}
        manifest["stages"][name] = entry
        # Downstream stages are now stale even if their fingerprint would still match by accident.
        for later in self.order[self.order.index(name) + 1:]:
            if later in manifest["stages"] and name in self._ancestors(later):
                manifest["stages"][later]["status"] = "stale"
        self._save_manifest(manifest)
        t0 = time.perf_counter()
        fn = _stage_fn(stage)
        try:
            try:
                if stage.distributed or self.state.is_main_process:
                    metrics = fn(self.run, self.recipe, progress=self.progress)
                else:
                    metrics = {}
            except pickle.UnpicklingError as exc:  # checkpoints load with weights_only: never run code from a run dir
                raise RunDirError(
                    f"stage '{name}': a checkpoint or adapter it reads holds more than tensors and plain data, so it "
                    f"was not loaded ({str(exc).splitlines()[0]}). It was not written by llm-unlearn; delete "
                    f"{self._pickle_hint(name)} and run again") from exc
        except Exception:
            self._put_back(manifest, name, before, aside)
            raise
        self.state.wait_for_everyone()
        if self.state.is_main_process:
            shutil.rmtree(aside, ignore_errors=True)
            if stage_dir.is_dir():
                share_like_umask(stage_dir)  # rule T10: whatever wrote the files, they follow the umask
        entry.update({"status": "done", "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                      "seconds": round(time.perf_counter() - t0, 2), "metrics": metrics,
                      "outputs": sorted(str(p.relative_to(self.run.root)) for p in stage_dir.glob("*")
                                        if not p.name.startswith(".")) if stage_dir.exists() else [],
                      "files": stage_files(stage_dir)})
        for earlier in self._ancestors(name):  # a stage may add to an earlier one's folder (eval: the model card)
            old = manifest["stages"].get(earlier)
            if old and old.get("status") == "done" and isinstance(old.get("files"), dict):
                old["files"] = stage_files(self.run.stage_dir(earlier))
        self._finished_here = True
        self._save_manifest(manifest)
        logger.info("stage %-9s done in %.1f s", name, entry["seconds"])

    def _put_back(self, manifest: dict, name: str, before: dict, aside) -> None:
        """Rule T5: a failed redo leaves the run as it was: the old output, its manifest entries and (when no stage
        of this call finished) the earlier recipe.yaml. A stage that had no earlier output keeps what it wrote, to
        resume from."""
        if not self.state.is_main_process or not aside.is_dir():
            return
        stage_dir = self.run.stage_dir(name)
        if stage_dir.is_dir() and not stage_dir.is_symlink():
            shutil.rmtree(stage_dir, ignore_errors=True)
        os.replace(aside, stage_dir)
        manifest["stages"] = before
        self._save_manifest(manifest)
        if not self._finished_here and self._recipe_before is not None:
            atomic_write_text(self.run.recipe, self._recipe_before)
        logger.warning("stage %s failed: its earlier output in %s is kept, unchanged", name, stage_dir)

    def _pickle_hint(self, name: str) -> str:
        """The pickle files a stage may have read (its folder's and its upstream stages'), for the message."""
        found = [f for d in [name, *sorted(self._ancestors(name))] for pattern in ("*.bin", "*.pt", "*.pth", "*.pkl")
                 for f in sorted(self.run.stage_dir(d).rglob(pattern)) if self.run.stage_dir(d).is_dir()]
        if found:
            return " and ".join(str(f) for f in found[:3]) + (f" (and {len(found) - 3} more)" if len(found) > 3 else "")
        return f"the folder of stage '{name}' ({self.run.stage_dir(name)})"

    def _ancestors(self, name: str) -> set[str]:
        out, todo = set(), list(self.stages[name].depends)
        while todo:
            d = todo.pop()
            if d not in out:
                out.add(d)
                todo += self.stages[d].depends
        return out
