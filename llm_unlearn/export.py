"""Stage 5: export the unlearned model in Hugging Face format (and optionally push it to the Hub).

The LoRA adapter is merged into a fresh copy of the base weights and saved with ``save_pretrained``
(safetensors) together with the tokenizer, so the folder loads with plain
``AutoModelForCausalLM.from_pretrained``. The adapter alone is kept beside it, and a model card records the
method, base model, target, anchor count, hyperparameters and (after evaluation) the results table.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from pathlib import Path

from .config import Recipe
from .errors import HubError
from .hardware import training_weights_dtype
from .rundir import RunPaths
from .runio import atomic_dir, atomic_write_text

logger = logging.getLogger(__name__)


def card_base_model(spec: str) -> str | None:
    """The Hub id a model card names as ``base_model``: the original of a packaged alias (or of its GGUF), a Hub id
    as given, and nothing for a local model (a local path is no Hub id, and would leak the user's folders)."""
    from .models import PACKAGED_MODELS

    if spec in PACKAGED_MODELS:
        return PACKAGED_MODELS[spec].hub_id or None
    path = Path(spec).expanduser()
    if path.exists() or path.is_absolute() or path.suffix.lower() == ".gguf":
        packaged = [pm for pm in PACKAGED_MODELS.values() if pm.gguf_name == path.name]
        return packaged[0].hub_id if packaged else None
    return spec


def _public_name(value: str) -> str:
    """A path as its file name only (a card is published; the user's folders are nobody's business)."""
    path = Path(value).expanduser()
    if path.exists() or path.is_absolute() or path.suffix or value.startswith((".", "~")):
        return path.name
    return value  # a Hub / datasets id or an alias


def model_card(recipe: Recipe, run: RunPaths, eval_table: str | None = None) -> str:
    from .methods import get_method

    method = get_method(recipe.method)
    ft = recipe.finetune
    mode = "full fine-tune" if ft.full_finetune else f"LoRA r={ft.lora_r}, alpha={ft.lora_alpha}, merged"
    if ft.quantization_aware:
        fmt = "the base file's own GGUF types" if ft.quantization_aware == "base" else ft.quantization_aware
        mode += (f", quantization-aware: trained on the grid of {fmt}, so quantizing it to that format with llama.cpp "
                 "leaves the weights unchanged")
    if method.name == "whp":
        tag = "whos-harry-potter"
        intro = ("Made with [llm-unlearn](https://pypi.org/project/llm-unlearn/) using the \"Who's Harry Potter\" "
                 "method (Eldan & Russinovich, 2023): a reinforced model is fine-tuned on the target text, anchored "
                 "terms are replaced by generic translations, generic-prediction labels `v_b - alpha * ReLU(v_r - v_b)` "
                 "are built from the base and reinforced logits, and the base model is fine-tuned on those labels.")
        rows = _whp_rows(recipe, run, mode)
    else:
        tag = method.name.replace("_", "-")
        intro = (f"Made with [llm-unlearn](https://pypi.org/project/llm-unlearn/) using the `{method.name}` method: "
                 f"{method.summary} ({method.paper}).")
        settings = ", ".join(f"{k} {v}" for k, v in dataclasses.asdict(getattr(recipe, method.name)).items()) or "-"
        rows = [f"| {method.name} settings | {settings} |",
                f"| unlearning training | {mode}; lr {ft.learning_rate}, epochs {ft.epochs}, max_steps "
                f"{ft.max_steps}, batch {ft.batch_size}x{ft.gradient_accumulation} |"]
    base_model = card_base_model(recipe.model.spec)
    model_name = base_model or _public_name(recipe.model.spec)
    lines = [
        "---",
        *([f"base_model: {base_model}"] if base_model else []),
        "library_name: transformers",
        f"tags: [unlearning, {tag}, llm-unlearn]",
        "---",
        "",
        f"# {recipe.name}: {model_name} with '{recipe.target or 'the target concept'}' unlearned",
        "",
        intro,
        "",
        "| setting | value |",
        "|---|---|",
        f"| method | `{method.name}` |",
        f"| base model | `{model_name}` |",
        f"| target | {recipe.target or '-'} |",
        f"| corpus | `{_public_name(recipe.corpus.path) if recipe.corpus.path else 'in-memory'}` "
        f"(block size {recipe.corpus.block_size}) |",
        *([f"| extra target text | {', '.join(f'`{_public_name(p)}`' for p in recipe.corpus.extra_paths)} |"]
          if recipe.corpus.extra_paths else []),
        *rows,
        "",
        "## Evaluation",
        "",
        eval_table or "Not evaluated yet (run `llm-unlearn eval`).",
        "",
        "## Limits",
        "",
        "Unlearning by fine-tuning is approximate: knowledge can sometimes be re-elicited (other languages, jailbreak "
        "prompts, in-context hints, relearning with a few fine-tuning steps). Check the evaluation before relying on it.",
        "",
    ]
    return "\n".join(lines)


def _whp_rows(recipe: Recipe, run: RunPaths, mode: str) -> list[str]:
    anchors = "?"
    if run.anchors.exists():
        from .whp.anchors import AnchorDictionary

        anchors = str(len(AnchorDictionary.load(run.anchors)))
    stats = json.loads(run.labels_stats.read_text()) if run.labels_stats.exists() else {}
    ft, rf, lb = recipe.finetune, recipe.reinforce, recipe.labels
    alpha = ft.label_alpha if ft.label_alpha is not None else lb.alpha
    return [
        f"| anchored terms | {anchors} |",
        f"| reinforce | lr {rf.learning_rate}, epochs {rf.epochs}, max_steps {rf.max_steps} |",
        f"| label alpha | {alpha} (labels also built for {recipe.label_alphas()}) |",
        f"| changed labels | {stats.get('changed_fraction', float('nan')):.1%} of supervised positions |",
        f"| unlearning fine-tune | {mode}; lr {ft.learning_rate}, epochs {ft.epochs}, max_steps {ft.max_steps}, "
        f"batch {ft.batch_size}x{ft.gradient_accumulation} |",
        f"| retain guard (KL to base) | {ft.retain_weight if ft.retain_weight else 'off'} |",
    ]


def run_export(run: RunPaths, recipe: Recipe, progress: bool = True) -> dict:
    """The method's trained weights (finetune/adapter for WHP, unlearn/adapter for the baselines) -> export/model
    (merged, safetensors) + export/adapter + model card."""
    import torch
    from transformers import AutoModelForCausalLM

    from .methods import get_method
    from .models import load_model

    method = get_method(recipe.method)
    weights = method.weights(run)

    base, tokenizer = load_model(recipe.model.spec, dtype=training_weights_dtype(recipe.model.dtype, "cpu"), device="cpu",
                                 trust_remote_code=recipe.model.trust_remote_code)
    if recipe.finetune.full_finetune:
        merged = AutoModelForCausalLM.from_pretrained(weights, dtype=base.dtype, use_safetensors=True)
    else:
        from peft import PeftModel

        merged = PeftModel.from_pretrained(base, weights).merge_and_unload()
    merged.eval()
    with atomic_dir(run.export_model) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        atomic_write_text(tmp / "README.md", model_card(recipe, run))
    if not recipe.finetune.full_finetune:
        shutil.rmtree(run.export_adapter, ignore_errors=True)
        shutil.copytree(weights, run.export_adapter)
    n_params = sum(p.numel() for p in merged.parameters())
    del merged, base
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    out = {"method": method.name, "model": str(run.export_model), "adapter": str(run.export_adapter) if run.export_adapter.exists() else None,
           "parameters": n_params}
    return out  # pushing to the Hub happens after the stage (Pipeline._maybe_push), so it never redoes the export


def push_to_hub(folder: str | Path, repo_id: str, private: bool = True) -> str:
    """Upload an exported folder. The token comes only from the environment (HF_TOKEN)."""
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if not token:
        raise HubError("push_to_hub needs a token in the environment: export HF_TOKEN=hf_... (a write token)")
    from .models import _hub_reachable

    if not _hub_reachable():
        raise HubError("cannot reach the Hugging Face Hub (offline, or HF_HUB_OFFLINE is set); the model is saved "
                       f"locally at {folder}; push it later with "
                       f"`llm-unlearn export --out {Path(folder).parent.parent} --push-to-hub {repo_id}`")
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                                 commit_message="Upload unlearned model (llm-unlearn)")
    except Exception as exc:  # hub client errors: auth, permissions, network
        raise HubError(f"push to {repo_id} failed: {exc}") from exc
    return str(getattr(info, "commit_url", f"https://huggingface.co/{repo_id}"))


def update_card_with_eval(run: RunPaths, recipe: Recipe, eval_table: str) -> None:
    readme = run.export_model / "README.md"
    if run.export_model.exists():
        atomic_write_text(readme, model_card(recipe, run, eval_table))
