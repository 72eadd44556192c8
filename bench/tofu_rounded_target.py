#!/usr/bin/env python
"""How much of the TOFU authors the target model keeps when its decoder weights are rounded to a GGUF format.

    python bench/tofu_rounded_target.py runs/tofu_cpu --format Q4_1

The control for quantization-aware unlearning on TOFU (``finetune.quantization_aware``): that option starts from the
target model on its format's grid, so a target whose fine-tuning moved its weights by less than half a step has
already lost the authors before any unlearning. Prints the forget- and retain-author answer probability (TOFU-M1)
of the target model before and after rounding (gguf-py's own quantizer, ``llm_unlearn.gguf_formats``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from llm_unlearn.gguf_formats import linear_plan, rounded_copy
from llm_unlearn.models import load_tokenizer
from llm_unlearn.tofu.bench import TofuBenchConfig, tofu_data
from llm_unlearn.tofu.evaluate import answer_losses
from llm_unlearn.tofu.metrics import answer_probability


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", help="a finished `llm-unlearn benchmark tofu --out` folder (its results.json)")
    ap.add_argument("--recipe", default="recipes/tofu_smollm2_cpu.yaml", help="the TOFU recipe it ran")
    ap.add_argument("--format", default="Q4_1", help="GGUF format (Q8_0, Q5_1, Q5_0, Q4_1, Q4_0, Q4_K, ...)")
    args = ap.parse_args()
    cfg = TofuBenchConfig.from_yaml(args.recipe)
    data = tofu_data(cfg)
    path = json.loads((Path(args.out) / "results.json").read_text())["target_model"]["path"]
    tok = load_tokenizer(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, use_safetensors=True).eval()
    rounded, _ = rounded_copy(model, linear_plan(model, args.format))
    for name, m in (("target", model), (f"target rounded to {args.format}", rounded)):
        cells = []
        for split, items in (("forget", data.forget_eval), ("retain", data.retain_eval)):
            losses = answer_losses(m, tok, [(it.question, it.answer) for it in items], cfg.eval)
            cells.append(f"{split} P(answer) {answer_probability(losses):.3f}")
        print(f"{name}: " + ", ".join(cells))


if __name__ == "__main__":
    main()
