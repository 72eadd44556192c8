#!/usr/bin/env python
"""Speed and memory benchmarks of llm-unlearn on SmolLM2-135M and a Sherlock Holmes slice.

    python bench/run.py                      # everything, ~10 minutes on 2 idle CPU cores
    python bench/run.py --only labels,finetune --repeats 5
    python bench/run.py --blocks 32 --memory-full   # bigger slice; the memory check on the unmodified demo

Each comparison is measured side by side in one run, interleaved (A, B, A, B, ...) after a warm-up round, and
reported as a ratio of medians, so that background load on a shared machine affects both sides alike:

labels      label generation (``label_blocks``: translation, both forward passes, masks, formula, suppression,
            argmax, for 3 alphas) vs the bare forward passes it needs (base on the translated blocks + reinforced
            on the original blocks, same batches, inputs prepared outside the timed window).   goal <= 1.25
reference   label generation vs ``tests/reference_labels.py`` (the authors' procedure written straightforwardly:
            batch of one block, per-position Python loop, suppression list rebuilt at every position). The labels
            must be identical; the run fails (exit 1) if they are not.                             goal >= 5x
finetune    one unlearning fine-tune step through the project's ``Trainer`` vs a bare peft + torch step
            (``loss = model(**batch).loss; loss.backward(); opt.step(); opt.zero_grad()``), same LoRA config,
            same batch.                                                                            goal <= 1.05
anchors     spaCy anchor extraction (``build_anchor_dictionary``) on the whole Sherlock corpus: words/s.
eval        the built-in multiple-choice scorer vs lm-evaluation-harness on the same items: items/s, and whether
            the accuracies agree.
memory      peak resident memory of every demo stage, each in its own process (``llm-unlearn run --until``),
            and of label generation on N and 2N blocks (must be flat).                    goal: demo < 6 GiB

Results: a table on stdout, JSON in bench/results/ (``--out``), and ``--markdown`` prints the table for
docs/performance.md.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    ALPHAS,
    BENCHMARK_DIR,
    BLOCK_SIZE,
    CPU_TIMES,
    DEMO_RECIPE,
    LORA_TARGETS,
    REPO,
    RESULTS_DIR,
    CachedLogits,
    interleaved,
    load_base,
    machine_info,
    make_reinforced,
    median,
    sherlock_blocks,
)

SECTIONS = ["anchors", "labels", "finetune", "eval", "memory"]
GIB = 2**30


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---- anchors ----------------------------------------------------------------------------------------------
def bench_anchors(ctx: dict, args) -> dict:
    from llm_unlearn.config import AnchorsConfig
    from llm_unlearn.whp.anchors import build_anchor_dictionary

    blocks = ctx["all_blocks"]
    texts = [b.text for b in blocks]  # what the anchors stage reads: the blocks' texts, in order
    words = sum(len(t.split()) for t in texts)
    cfg = AnchorsConfig(top_k=150, min_count=3, translations_per_key=3)  # the demo recipe's anchors section
    log(f"anchors: spaCy extraction on the whole corpus ({len(texts)} blocks, {words} words)")
    t0 = time.perf_counter()
    dictionary = build_anchor_dictionary(texts, cfg, progress=False)
    seconds = time.perf_counter() - t0
    ctx["dictionary"] = dictionary
    return {"blocks": len(texts), "words": words, "characters": sum(len(t) for t in texts), "seconds": seconds,
            "words_per_s": words / seconds, "anchors": len(dictionary)}


def _dictionary(ctx: dict):
    if "dictionary" not in ctx:  # anchors section skipped: extract from the slice only (quicker)
        from llm_unlearn.config import AnchorsConfig
        from llm_unlearn.whp.anchors import build_anchor_dictionary

        ctx["dictionary"] = build_anchor_dictionary([b.text for b in ctx["all_blocks"][:64]],
                                                    AnchorsConfig(top_k=150, min_count=3, translations_per_key=3),
                                                    progress=False)
    return ctx["dictionary"]


# ---- labels: vs the forward floor and vs the reference procedure ---------------------------------------------
def bench_labels(ctx: dict, args) -> dict:
    import torch

    from llm_unlearn.whp.labels import LogitSource, _pad, block_rng, label_blocks
    from llm_unlearn.whp.translation import Translator
    from tests.reference_labels import compare_rows, reference_labels  # the test oracle

    tok = ctx["tok"]
    blocks = ctx["all_blocks"][: args.blocks]
    idx = list(range(len(blocks)))
    translator = Translator(_dictionary(ctx), tok)
    reinforced = make_reinforced(ctx["base"])
    source = LogitSource(reinforced)
    bs, pad = args.label_batch, tok.pad_token_id

    # The floor: exactly the forward passes label_blocks makes (same bucketing, same batches), inputs ready.
    order = sorted(idx, key=lambda i: -len(blocks[i].input_ids))
    t0 = time.perf_counter()
    translated = {i: translator.translate(blocks[i], block_rng(0, i)) for i in idx}
    translate_s = time.perf_counter() - t0
    batches = []
    for start in range(0, len(order), bs):
        chunk = order[start:start + bs]
        batches.append((_pad([translated[i].translated_ids for i in chunk], pad),
                        _pad([blocks[i].input_ids for i in chunk], pad)))

    def floor():
        with torch.inference_mode():
            for (t_ids, t_att), (o_ids, o_att) in batches:
                source.base(t_ids, t_att)
                source.reinforced_logits(o_ids, o_att)

    def labels():
        return label_blocks(source, blocks, idx, translator, ALPHAS, bs, 0, pad, progress=False)

    ref_timing = {"forward": 0.0, "loop": 0.0}

    def reference():
        return reference_labels(source, blocks, idx, translator, ALPHAS, 0, timings=ref_timing)

    tokens = sum(len(b) for b in blocks)
    log(f"labels: {len(blocks)} blocks x {BLOCK_SIZE} tokens ({tokens} tokens), batch {bs}, {args.repeats} repeats")
    fns = {"labels": labels, "floor": floor}
    if not args.no_reference:
        fns["reference"] = reference
    times, last = interleaved(fns, args.repeats, warmup=1, log=log)
    cpu = {k: list(v) for k, v in CPU_TIMES.items()}
    rows, stats = last["labels"]
    out = {"blocks": len(blocks), "tokens": tokens, "batch_size": bs, "alphas": ALPHAS, "repeats": args.repeats,
           "seconds": times, "cpu_seconds": cpu, "translate_seconds": translate_s,
           "ratio_labels_vs_floor_cpu": median(cpu["labels"]) / median(cpu["floor"]),
           "labels_tokens_per_s": tokens / median(times["labels"]),
           "floor_tokens_per_s": tokens / median(times["floor"]),
           "ratio_labels_vs_floor": median(times["labels"]) / median(times["floor"]),
           "supervised_positions": stats.supervised, "changed_fraction": stats.changed / max(stats.supervised, 1),
           "anchors_used": sum(stats.anchors_used.values()),
           "suppression_entries": sum(len(t.suppress_from) for t in translated.values())}
    if "reference" in last:
        runs = args.repeats + 1
        out["reference_forward_seconds"] = ref_timing["forward"] / runs
        out["reference_loop_seconds"] = ref_timing["loop"] / runs
        out["speedup_vs_reference"] = median(times["reference"]) / median(times["labels"])
        out["speedup_vs_reference_cpu"] = median(cpu["reference"]) / median(cpu["labels"])
        cmp = compare_rows(rows, last["reference"], ALPHAS)
        out["equality"] = cmp
        if cmp["differences"]:
            # Diagnose: the same blocks with batch size 1 (no padding, same kernels as the reference).
            rows1, _ = label_blocks(source, blocks, idx, translator, ALPHAS, 1, 0, pad, progress=False)
            out["equality_batch1"] = compare_rows(rows1, last["reference"], ALPHAS)
    # The labelling work alone (translation, masks, formula, suppression, argmax; no forward passes): both
    # implementations run on stored logits. The stored logits of this slice take ~2 x tokens x vocab x 4 bytes.
    if "reference" in last and not args.no_work:
        cached = CachedLogits(source)
        work = {"label_blocks": lambda: label_blocks(cached, blocks, idx, translator, ALPHAS, bs, 0, pad,
                                                     progress=False),
                "reference": lambda: reference_labels(cached, blocks, idx, translator, ALPHAS, 0)}
        log("labels: labelling work alone, on stored logits")
        wtimes, wlast = interleaved(work, args.repeats, warmup=1, log=log)
        out["labelling_work_seconds"] = wtimes
        out["labelling_work_cpu_seconds"] = {k: list(v) for k, v in CPU_TIMES.items()}
        out["labelling_work_speedup_vs_reference"] = median(wtimes["reference"]) / median(wtimes["label_blocks"])
        out["labelling_work_share_of_labels"] = median(wtimes["label_blocks"]) / median(times["labels"])
        assert compare_rows(wlast["label_blocks"][0], wlast["reference"], ALPHAS)["differences"] == cmp["differences"]
        del cached, work, wlast
    ctx["label_rows"] = rows
    return out



# ---- fine-tune step --------------------------------------------------------------------------------------------
def bench_finetune(ctx: dict, args) -> dict:
    """The engine's own loop (``transformers.Trainer`` through :func:`train_stage`) against bare peft + torch
    steps, interleaved: every ``k`` engine steps a callback times them, then runs and times ``k`` bare steps, so
    background load affects both alike. The first round (data loader and optimizer set-up) is not timed."""
    import torch
    from transformers import TrainerCallback

    from llm_unlearn.training import TrainConfig, pad_batch, resolve_precision, train_stage, wrap_lora
    from llm_unlearn.whp.labels import alpha_key

    tok = ctx["tok"]
    key = alpha_key(5.0)
    if "label_rows" in ctx:
        rows = [{"input_ids": r["input_ids"], key: r[key]} for r in ctx["label_rows"][: args.ft_batch]]
    else:
        key = None
        rows = [{"input_ids": b.input_ids} for b in ctx["all_blocks"][: args.ft_batch]]
    k = args.ft_steps
    # A constant learning rate, as in the bare loop (a decaying schedule would reach 0 and make the two models
    # diverge: different weights, possibly different arithmetic speed); the schedule covers every timed round.
    cfg = TrainConfig(lora_r=16, lora_alpha=32, lora_dropout=0.05, target_modules=LORA_TARGETS,
                      learning_rate=3e-4, adam_beta2=0.98, max_steps=k * (args.repeats + 1), batch_size=args.ft_batch,
                      eval_every=10**9, warmup_ratio=0.0, lr_scheduler="constant", seed=0)
    stage = Path(tempfile.mkdtemp(prefix="bench-ft-"))

    torch.manual_seed(0)
    bare = wrap_lora(copy.deepcopy(ctx["base"]), cfg)
    bare.train()
    opt = torch.optim.AdamW([p for p in bare.parameters() if p.requires_grad], lr=cfg.learning_rate,
                            betas=(cfg.adam_beta1, cfg.adam_beta2))
    batch = pad_batch(rows, tok.pad_token_id, key)
    # the bare loop computes in the precision the engine resolves (bf16 autocast on a CPU with native bf16)
    precision = resolve_precision(cfg.mixed_precision, weights_dtype=next(bare.parameters()).dtype)

    def bare_steps():
        for _ in range(k):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = bare(**batch).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
        return float(loss.detach())

    wall: dict[str, list[float]] = {"trainer": [], "bare": []}
    cpu_s: dict[str, list[float]] = {"trainer": [], "bare": []}

    class Interleave(TrainerCallback):
        mark = (0.0, 0.0)

        def on_train_begin(self, *a, **kw):
            self.mark = (time.perf_counter(), time.process_time())

        def on_step_end(self, a, state, control, **kw):
            if state.global_step % k:
                return
            rnd = state.global_step // k - 1
            t, c = time.perf_counter() - self.mark[0], time.process_time() - self.mark[1]
            t0, c0 = time.perf_counter(), time.process_time()
            bare_steps()
            bt, bc = time.perf_counter() - t0, time.process_time() - c0
            if rnd >= 1:
                wall["trainer"].append(t)
                cpu_s["trainer"].append(c)
                wall["bare"].append(bt)
                cpu_s["bare"].append(bc)
            log(f"  {'warmup' if rnd < 1 else 'repeat ' + str(rnd)}: trainer {t:.2f}s (cpu {c:.2f}s), "
                f"bare {bt:.2f}s (cpu {bc:.2f}s)")
            self.mark = (time.perf_counter(), time.process_time())

    tokens = sum(len(r["input_ids"]) for r in rows)
    log(f"finetune: batch {len(rows)} x {BLOCK_SIZE} tokens, {k} steps per timing, {args.repeats} repeats")
    train_stage(copy.deepcopy(ctx["base"]), tok, cfg, stage, rows, [], label_key=key, select_best=False,
                desc="bench", progress=False, callbacks=[Interleave()])
    per_step = {name: [t / k for t in ts] for name, ts in wall.items()}
    cpu = {name: [t / k for t in ts] for name, ts in cpu_s.items()}
    out = {"batch_size": len(rows), "tokens_per_step": tokens, "steps_per_timing": k, "repeats": args.repeats,
           "mixed_precision": precision, "seconds_per_step": per_step, "label_key": key,
           "trainer_tokens_per_s": tokens / median(per_step["trainer"]),
           "bare_tokens_per_s": tokens / median(per_step["bare"]),
           "ratio_trainer_vs_bare": median(per_step["trainer"]) / median(per_step["bare"]),
           "cpu_seconds_per_step": cpu, "ratio_trainer_vs_bare_cpu": median(cpu["trainer"]) / median(cpu["bare"])}
    shutil.rmtree(stage, ignore_errors=True)
    return out


# ---- evaluation throughput ---------------------------------------------------------------------------------
def bench_eval(ctx: dict, args) -> dict:
    from llm_unlearn.evaluation.benchmarks import load_benchmark, score_benchmark
    from llm_unlearn.evaluation.lm_eval_bridge import lm_eval_available, summarize_results, write_local_tasks

    model, tok = ctx["base"], ctx["tok"]
    tasks = [t.strip() for t in args.eval_tasks.split(",") if t.strip()]
    limit = args.eval_limit
    n_items = {t: len(load_benchmark(t, BENCHMARK_DIR, limit)) for t in tasks}
    total = sum(n_items.values())

    def builtin():
        out = {}
        for t in tasks:
            items = load_benchmark(t, BENCHMARK_DIR, limit)
            r = score_benchmark(model, tok, t, items, batch_size=args.eval_batch, progress=False)
            out[t] = {"acc": r["acc"], **({"acc_norm": r["acc_norm"]} if "acc_norm" in r else {})}
        return out

    if not lm_eval_available():
        log("eval: lm-eval not installed; timing the built-in scorer only")
        times, last = interleaved({"builtin": builtin}, args.eval_repeats, warmup=0, log=log)
        return {"items": total, "tasks": n_items, "seconds": times,
                "builtin_items_per_s": total / median(times["builtin"]), "lm_eval": None}

    work = Path(tempfile.mkdtemp(prefix="bench-lmeval-"))

    def lm_eval():
        import logging

        from lm_eval import simple_evaluate
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager

        for name in ("lm-eval", "lm_eval"):
            logging.getLogger(name).setLevel(logging.ERROR)
        names = write_local_tasks(tasks, BENCHMARK_DIR, work, limit)
        tm = TaskManager(include_path=str(work), include_defaults=False)
        res = simple_evaluate(model=HFLM(pretrained=model, tokenizer=tok, batch_size=args.eval_batch), tasks=names,
                              task_manager=tm, log_samples=False, num_fewshot=0)
        summary = summarize_results(res)
        return {t: {m: summary[n][m] for m in ("acc", "acc_norm") if m in summary[n]} for t, n in zip(tasks, names, strict=True)}

    log(f"eval: {total} items ({', '.join(f'{t} {n}' for t, n in n_items.items())}), batch {args.eval_batch}")
    times, last = interleaved({"builtin": builtin, "lm_eval": lm_eval}, args.eval_repeats, warmup=1, log=log)
    cpu = {k: list(v) for k, v in CPU_TIMES.items()}
    shutil.rmtree(work, ignore_errors=True)
    agree = {t: {m: (last["builtin"][t][m], last["lm_eval"][t].get(m)) for m in last["builtin"][t]} for t in tasks}
    return {"items": total, "tasks": n_items, "batch_size": args.eval_batch, "repeats": args.eval_repeats,
            "seconds": times, "builtin_items_per_s": total / median(times["builtin"]),
            "lm_eval_items_per_s": total / median(times["lm_eval"]),
            "speedup_builtin_vs_lm_eval": median(times["lm_eval"]) / median(times["builtin"]),
            "cpu_seconds": cpu, "speedup_builtin_vs_lm_eval_cpu": median(cpu["lm_eval"]) / median(cpu["builtin"]),
            "accuracy": agree,
            "accuracies_equal": all(abs(a - b) < 1e-9 for t in agree.values() for a, b in t.values() if b is not None)}


# ---- memory ------------------------------------------------------------------------------------------------
QUICK_DEMO_OVERRIDES = [
    "corpus.max_blocks=24", "reinforce.max_steps=2", "finetune.max_steps=2", "reinforce.eval_every=1000",
    "finetune.eval_every=1000", "eval.limit=8", "eval.perplexity_max_tokens=2048", "eval.suites=[]",
    "eval.bootstrap=200",
]


def _run_measured(args: list[str], logfile: Path, env: dict) -> tuple[int, int, float]:
    """Run ``python -m ARGS`` under bench/peak_rss.py; return (exit status, its peak RSS in bytes, seconds)."""
    report = logfile.with_suffix(".peak.json")
    report.unlink(missing_ok=True)
    cmd = [sys.executable, str(REPO / "bench" / "peak_rss.py"), str(report)] + args
    t0 = time.perf_counter()
    with open(logfile, "ab") as fh:
        rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=REPO, env=env).returncode
    seconds = time.perf_counter() - t0
    peak = json.loads(report.read_text()) if report.is_file() else {}
    return rc, max(peak.get("peak_rss_bytes", 0), peak.get("children_peak_rss_bytes", 0)), seconds


def saved_activations(base, tokens: list[int], checkpointing: bool) -> int:
    """Bytes autograd saves for the backward pass of one LoRA training forward (the demo's LoRA config), counted
    with saved-tensor hooks (each storage once, the model's own weights excluded). With gradient checkpointing the recomputed blocks save nothing
    here (one block's activations exist again, briefly, during its recomputation)."""
    import torch

    from llm_unlearn.training import TrainConfig, wrap_lora

    model = wrap_lora(copy.deepcopy(base), TrainConfig(target_modules=LORA_TARGETS, lora_dropout=0.05))
    model.train()
    if checkpointing:
        model.enable_input_require_grads()
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    seen: dict[int, int] = {}
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}  # saved too, but not activations

    def pack(t):
        st = t.untyped_storage()
        if st.data_ptr() not in weights:
            seen[st.data_ptr()] = max(seen.get(st.data_ptr(), 0), st.nbytes())
        return t

    ids = torch.tensor([tokens])
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=ids, labels=ids)
    return sum(seen.values())


def bench_memory(ctx: dict, args) -> dict:
    from llm_unlearn.pipeline import ORDER

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench-mem-"))
    overrides = [] if args.memory_full else QUICK_DEMO_OVERRIDES
    run_dir = work / "run"
    stages = {}
    log(f"memory: demo recipe stage by stage ({'unmodified' if args.memory_full else 'quick overrides'}), "
        f"log in {work / 'stages.log'}")
    for stage in ORDER:
        if stage in args.skip_stages.split(","):
            continue
        cmd = ["llm_unlearn", "run", str(DEMO_RECIPE), "--out", str(run_dir), "--until", stage,
               "--no-progress"] + [x for o in overrides for x in ("--set", o)]
        rc, peak, secs = _run_measured(cmd, work / "stages.log", env)
        stages[stage] = {"peak_rss_bytes": peak, "peak_rss_gib": peak / GIB, "seconds": secs, "exit": rc}
        log(f"  {stage}: peak {peak / GIB:.2f} GiB, {secs:.0f}s, exit {rc}")
        if rc != 0:
            stages[stage]["log_tail"] = (work / "stages.log").read_text(errors="replace")[-2000:]
            break
    out = {"recipe": str(DEMO_RECIPE.relative_to(REPO)), "overrides": overrides, "stages": stages,
           "max_stage_peak_gib": max((s["peak_rss_gib"] for s in stages.values()), default=None)}

    # Label generation on N and 2N blocks: the peak must not grow with the corpus.
    if args.memory_blocks > 0:
        if args.memory_blocks < args.label_batch:  # N must fill a batch, or N vs 2N compares batch sizes
            args.memory_blocks = args.label_batch
        dict_path = run_dir / "anchors" / "anchors.yaml"  # the demo's own anchors, when its anchors stage ran
        if "dictionary" in ctx or not dict_path.is_file():
            dict_path = work / "anchors.yaml"
            _dictionary(ctx).save(dict_path)
        scaling = []
        for n in (args.memory_blocks, 2 * args.memory_blocks):
            cmd = [sys.executable, str(REPO / "bench" / "labels_memory.py"), str(n), "--dictionary", str(dict_path),
                   "--batch-size", str(args.label_batch)] + (["--threads", str(args.threads)] if args.threads else [])
            res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env)
            if res.returncode != 0:
                scaling.append({"blocks": n, "error": res.stderr[-1500:]})
                continue
            row = json.loads(res.stdout.strip().splitlines()[-1])
            scaling.append(row)
            peak = row["peak_rss_labelling"] or row["peak_rss_process"]
            log(f"  labels on {n} blocks: setup {row['rss_after_setup'] / GIB:.2f} GiB, peak {peak / GIB:.2f} GiB, "
                f"rows {row['rows_python_bytes'] / 2**20:.1f} MiB")
        out["labels_scaling"] = scaling
        ok = [r for r in scaling if "error" not in r]
        if len(ok) == 2:
            p = [(r["peak_rss_labelling"] or r["peak_rss_process"]) for r in ok]
            out["labels_peak_growth_2x_blocks"] = p[1] / p[0]
    # Activations per token of a LoRA training step (what grows with batch x block size), with and without
    # gradient checkpointing: the factor docs/scaling.md extrapolates from.
    tokens = ctx["all_blocks"][0].input_ids
    cfg = ctx["base"].config
    act = {"tokens": len(tokens), "hidden_size": cfg.hidden_size, "layers": cfg.num_hidden_layers,
           "vocab": cfg.vocab_size, "dtype": str(ctx["base"].dtype)}
    for gc_on in (False, True):
        b = saved_activations(ctx["base"], tokens, gc_on)
        act["checkpointing" if gc_on else "plain"] = {"bytes": b, "bytes_per_token": b / len(tokens)}
        log(f"  saved activations, gradient checkpointing {'on' if gc_on else 'off'}: "
            f"{b / len(tokens) / 1024:.0f} KiB/token")
    out["activations"] = act
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        out["work_dir"] = str(work)
    return out


# ---- table ---------------------------------------------------------------------------------------------------
def table(results: dict) -> list[tuple[str, str, str, str]]:
    """(metric, measured, goal, verdict) rows."""
    rows = []
    r = results.get("labels")
    if r:
        ratio = r["ratio_labels_vs_floor"]
        rows.append(("label generation / bare forward passes", f"{ratio:.3f}  (cpu {r['ratio_labels_vs_floor_cpu']:.3f}; "
                     f"{r['labels_tokens_per_s']:.0f} vs {r['floor_tokens_per_s']:.0f} tok/s)", "<= 1.25",
                     "met" if ratio <= 1.25 else "MISSED"))
        if "speedup_vs_reference" in r:
            s = r["speedup_vs_reference"]
            rows.append(("label generation speed-up vs reference procedure",
                         f"{s:.2f}x  (cpu {r['speedup_vs_reference_cpu']:.2f}x)", ">= 5x",
                         "met" if s >= 5 else "MISSED"))
            if "labelling_work_seconds" in r:
                w = {k: median(v) for k, v in r["labelling_work_seconds"].items()}
                rows.append(("  labelling work alone (stored logits): speed-up vs reference",
                             f"{r['labelling_work_speedup_vs_reference']:.2f}x  ({w['reference']:.2f}s vs "
                             f"{w['label_blocks']:.2f}s; {100 * r['labelling_work_share_of_labels']:.0f}% of "
                             "label generation)", "", ""))
            eq = r["equality"]
            rows.append(("labels identical to reference", f"{eq['labels_compared'] - eq['differences']}/"
                         f"{eq['labels_compared']}", "all", "met" if eq["differences"] == 0 else "FAILED"))
    r = results.get("finetune")
    if r:
        ratio = r["ratio_trainer_vs_bare"]
        rows.append(("fine-tune step: Trainer / bare peft+torch", f"{ratio:.3f}  (cpu "
                     f"{r['ratio_trainer_vs_bare_cpu']:.3f}; {r['trainer_tokens_per_s']:.0f} vs "
                     f"{r['bare_tokens_per_s']:.0f} tok/s)", "<= 1.05", "met" if ratio <= 1.05 else "MISSED"))
    r = results.get("anchors")
    if r:
        rows.append(("anchor extraction, whole Sherlock corpus", f"{r['words_per_s']:.0f} words/s ({r['words']} "
                     f"words, {r['seconds']:.0f}s, {r['anchors']} anchors)", "", ""))
    r = results.get("eval")
    if r:
        if r.get("lm_eval_items_per_s"):
            rows.append(("MC eval: built-in scorer / lm-eval throughput", f"{r['speedup_builtin_vs_lm_eval']:.2f}x  "
                         f"({r['builtin_items_per_s']:.2f} vs {r['lm_eval_items_per_s']:.2f} items/s, "
                         f"{r['items']} items)", "", ""))
            rows.append(("MC eval: accuracies equal to lm-eval", str(r["accuracies_equal"]), "True",
                         "met" if r["accuracies_equal"] else "DIFFER"))
        else:
            rows.append(("MC eval: built-in scorer", f"{r['builtin_items_per_s']:.2f} items/s", "", ""))
    r = results.get("memory")
    if r:
        for stage, s in r["stages"].items():
            rows.append((f"peak RSS, demo stage '{stage}'", f"{s['peak_rss_gib']:.2f} GiB", "< 6 GiB",
                         ("met" if s["peak_rss_gib"] < 6 else "MISSED") if s["exit"] == 0 else f"exit {s['exit']}"))
        for row in r.get("labels_scaling", []):
            if "error" in row:
                rows.append((f"labels peak RSS, {row['blocks']} blocks", "error", "", ""))
                continue
            peak = row["peak_rss_labelling"] or row["peak_rss_process"]
            rows.append((f"labels peak RSS, {row['blocks']} blocks", f"{peak / GIB:.2f} GiB (rows "
                         f"{row['rows_python_bytes'] / 2**20:.1f} MiB)", "flat", ""))
        if "labels_peak_growth_2x_blocks" in r:
            g = r["labels_peak_growth_2x_blocks"]
            rows.append(("labels peak RSS growth for 2x blocks", f"{g:.3f}x", "~1.0", "met" if g < 1.05 else "GROWS"))
        a = r.get("activations")
        if a:
            rows.append(("saved activations per token, LoRA step (off / on grad. ckpt)",
                         f"{a['plain']['bytes_per_token'] / 1024:.0f} / {a['checkpointing']['bytes_per_token'] / 1024:.0f}"
                         " KiB", "", ""))
    return rows


def print_table(rows, markdown: bool) -> str:
    if markdown:
        lines = ["| metric | measured | goal | |", "|---|---|---|---|"]
        lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    else:
        w = [max(len(r[i]) for r in rows) for i in range(4)] if rows else [0] * 4
        lines = ["  ".join(x.ljust(w[i]) for i, x in enumerate(r)).rstrip() for r in rows]
    text = "\n".join(lines)
    print(text)
    return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="llm-unlearn speed and memory benchmarks",
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections ({', '.join(SECTIONS)})")
    ap.add_argument("--blocks", type=int, default=8, help="Sherlock blocks (256 tokens) for the label benchmarks")
    ap.add_argument("--label-batch", type=int, default=4, help="label batch size (the demo recipe's)")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats per side (after one warm-up round)")
    ap.add_argument("--no-reference", action="store_true", help="skip the reference procedure (slow)")
    ap.add_argument("--no-work", action="store_true",
                    help="skip timing the labelling work alone on stored logits (needs ~2 x tokens x vocab x 4 bytes)")
    ap.add_argument("--ft-batch", type=int, default=4, help="fine-tune batch size (blocks)")
    ap.add_argument("--ft-steps", type=int, default=2, help="fine-tune steps per timing")
    ap.add_argument("--eval-tasks", default="arc_easy,piqa,winogrande,hellaswag")
    ap.add_argument("--eval-limit", type=int, default=10, help="items per task")
    ap.add_argument("--eval-batch", type=int, default=16)
    ap.add_argument("--eval-repeats", type=int, default=2)
    ap.add_argument("--memory-full", action="store_true",
                    help="run the unmodified demo recipe for the memory check (~20+ min) instead of quick overrides")
    ap.add_argument("--memory-blocks", type=int, default=8, help="N for the labels N vs 2N memory check (0: skip it)")
    ap.add_argument("--skip-stages", default="", help="demo stages to leave out of the memory check")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--keep", action="store_true", help="keep the memory check's run directory")
    ap.add_argument("--out", default=None, help="JSON path (default bench/results/<UTC time>.json)")
    ap.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    args = ap.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(only) - set(SECTIONS)
    if unknown:
        ap.error(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")
    args.only = only
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import logging

    logging.basicConfig(level=logging.WARNING)
    for noisy in ("transformers", "datasets", "accelerate"):
        logging.getLogger(noisy).setLevel(logging.ERROR)

    started = time.time()
    load_start = os.getloadavg()
    ctx: dict = {}
    t0 = time.perf_counter()
    ctx["base"], ctx["tok"] = load_base(args.threads)
    ctx["all_blocks"] = sherlock_blocks(ctx["tok"])
    log(f"set-up: SmolLM2-135M + {len(ctx['all_blocks'])} Sherlock blocks in {time.perf_counter() - t0:.1f}s")
    info = machine_info()
    info["load_average_start"] = load_start
    results: dict = {"machine": info, "args": {k: v for k, v in vars(args).items()},
                     "started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    fns = {"anchors": bench_anchors, "labels": bench_labels, "finetune": bench_finetune, "eval": bench_eval,
           "memory": bench_memory}
    failed = False
    for section in SECTIONS:
        if section not in only:
            continue
        t1 = time.perf_counter()
        try:
            results[section] = fns[section](ctx, args)
        except Exception as exc:  # noqa: BLE001 - one broken section must not lose the others' numbers
            import traceback

            traceback.print_exc()
            results[section] = None
            results.setdefault("errors", {})[section] = f"{type(exc).__name__}: {exc}"
            failed = True
        results.setdefault("section_seconds", {})[section] = time.perf_counter() - t1
        gc.collect()
    results["machine"]["load_average_end"] = os.getloadavg()
    results["total_seconds"] = time.time() - started
    rows = table({k: v for k, v in results.items() if isinstance(v, dict)})
    results["table"] = [list(r) for r in rows]
    out = Path(args.out) if args.out else RESULTS_DIR / f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, default=str) + "\n")
    m = results["machine"]
    print(f"\n{m['cpu']}, {m['usable_cpus']} CPUs, torch {m['versions']['torch']} ({m['torch_threads']} threads), "
          f"load {m['load_average_start'][0]:.2f} -> {m['load_average_end'][0]:.2f}, {results['total_seconds']:.0f}s\n")
    print_table(rows, args.markdown)
    print(f"\nJSON: {out}")
    lab = results.get("labels") or {}
    if lab.get("equality", {}).get("differences"):
        print(f"\nFAILED: {lab['equality']['differences']} labels differ from the reference procedure "
              f"(batch size 1: {lab.get('equality_batch1', {}).get('differences')}); see the JSON", file=sys.stderr)
        return 1
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
