"""The labels stage: anchors + reinforced model + corpus blocks -> labels/dataset and labels/stats.json."""

from __future__ import annotations

import json
import logging

import torch

from ...hardware import training_weights_dtype as label_weights_dtype
from .building import LogitSource, label_blocks, merge_stats, raw_stats, save_label_dataset, stats_summary
from .formula import target_token_mask, target_words

logger = logging.getLogger(__name__)


def run_labels(run, recipe, progress: bool = True) -> dict:
    """anchors/anchors.yaml + reinforce/adapter + corpus/blocks.jsonl -> labels/dataset + labels/stats.json."""
    import shutil

    from ...corpus import read_blocks
    from ...models import default_device, load_model
    from ...training import process_state
    from ..anchors import AnchorDictionary
    from ..translation import Translator

    state = process_state()
    # Float32 weights on CPU even where bf16 is native (hardware rule H2): alpha multiplies the rounding error of
    # v_r - v_b, and bf16 forward passes changed 8-21% of the labels in bench/cpu_speed.py.
    model, tokenizer = load_model(recipe.model.spec, dtype=label_weights_dtype(recipe.model.dtype,
                                                                          recipe.model.device or default_device()),
                                  device=recipe.model.device,
                                  trust_remote_code=recipe.model.trust_remote_code)
    if recipe.reinforce.full_finetune:
        from transformers import AutoModelForCausalLM

        reinforced = AutoModelForCausalLM.from_pretrained(run.reinforce_weights, dtype=model.dtype,
                                                          use_safetensors=True).to(model.device).eval()
        source = LogitSource(reinforced, base_model=model)
    else:
        from peft import PeftModel

        source = LogitSource(PeftModel.from_pretrained(model, run.reinforce_weights).eval())
    logger.info("labels: forward passes in %s (label formula in float32), %d threads",
                str(model.dtype).replace("torch.", ""), torch.get_num_threads())
    blocks = read_blocks(run.blocks)
    dictionary = AnchorDictionary.load(run.anchors)
    if len(dictionary) == 0:
        logger.warning("labels: the anchor dictionary is empty; labels come from the logit offset alone")
    translator = Translator(dictionary, tokenizer)
    rise_mask, rise_info = None, {}
    if recipe.labels.rise_tokens == "target":
        from ...corpus import whole_corpus_texts

        words = target_words(whole_corpus_texts(recipe.corpus), recipe.labels.rise_keyness)
        target_mask = target_token_mask(words, dictionary.keys(), tokenizer,
                                        model.get_output_embeddings().weight.size(0))
        rise_mask = target_mask.to(model.device)
        top = sorted(words, key=lambda w: -words[w])
        rise_info = {"rise_tokens": "target", "rise_near_anchor": recipe.labels.rise_near_anchor,
                     "rise_words": len(words),
                     "rise_token_count": int(target_mask.sum()),
                     "rise_words_sample": top[:20] + top[len(top) // 2:len(top) // 2 + 10]}
        logger.info("labels: the ReLU term acts on %d tokens of %d target words and %d anchor keys (R1-R3)",
                    int(target_mask.sum()), len(words), len(dictionary))
    alphas = recipe.label_alphas()
    mine = list(range(len(blocks)))[state.process_index::state.num_processes]
    rows, stats = label_blocks(source, blocks, mine, translator, alphas, recipe.labels.batch_size, recipe.labels.seed,
                               tokenizer.pad_token_id, recipe.labels.suppress_used_translations,
                               progress=progress and state.is_main_process, soft_top_k=recipe.labels.soft_top_k,
                               rise_mask=rise_mask,
                               near_anchor=recipe.labels.rise_near_anchor)
    shard_dir = run.labels_dir / "shards"
    summary = {}
    if state.num_processes == 1:
        save_label_dataset(rows, alphas, run.labels_dataset)
        summary = stats_summary(stats, tokenizer)
        n_rows = len(rows)
    else:  # each process saves its rows as a dataset; the main process concatenates them in block order
        from ...runio import atomic_write_json

        save_label_dataset(rows, alphas, shard_dir / f"rank-{state.process_index:03d}")
        atomic_write_json(shard_dir / f"stats-{state.process_index:03d}.json", raw_stats(stats))
        state.wait_for_everyone()
        if state.is_main_process:
            import datasets

            from ...runio import atomic_dir

            parts = [datasets.load_from_disk(str(shard_dir / f"rank-{r:03d}")) for r in range(state.num_processes)]
            merged = datasets.concatenate_datasets(parts).sort("block_index")
            with atomic_dir(run.labels_dataset) as tmp:
                merged.save_to_disk(str(tmp))
            n_rows = len(merged)
            summary = merge_stats([json.loads((shard_dir / f"stats-{r:03d}.json").read_text())
                                   for r in range(state.num_processes)], tokenizer)
    if state.is_main_process:
        summary.update({"alphas": alphas, "blocks": n_rows, "anchor_keys": len(dictionary),
                        "processes": state.num_processes, **rise_info})
        from ...runio import atomic_write_json

        atomic_write_json(run.labels_stats, summary)
        shutil.rmtree(shard_dir, ignore_errors=True)
        logger.info("labels: %d blocks, %.1f%% of supervised positions changed (alpha %g)", n_rows,
                    100 * summary["changed_fraction"], alphas[len(alphas) // 2])
    state.wait_for_everyone()
    return summary
