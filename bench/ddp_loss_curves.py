"""Fine-tuning with 2 CPU processes (accelerate, gloo) against 1 process: do the loss curves match?

    python bench/ddp_loss_curves.py            # ~1-2 minutes; tiny random Llama, real SmolLM2 tokenizer

The same 12 training rows and 4 validation rows, the same global batch (4 = 1 x 4 = 2 x 2), LoRA dropout 0 (each
process would draw its own dropout masks), 8 optimizer steps, validation every 2. Two corpora: blocks of equal
length, and blocks of unequal length (padding; the two processes then hold different numbers of tokens).

What to expect: with equal lengths the validation curves are identical. With unequal lengths they differ in the
5th significant digit: DDP averages each process's mean loss, which is not the mean over all tokens of the global
batch when the processes hold different token counts (and the validation loss is a mean of batch means). The logged
*train* loss is not compared.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def worker(out: str, equal: bool) -> None:
    sys.path.insert(0, str(REPO / "tests"))
    sys.path.insert(0, str(REPO))
    import numpy as np
    import torch
    from conftest import build_tiny_llama

    from llm_unlearn.models import load_tokenizer
    from llm_unlearn.training import TrainConfig, process_state, train_stage

    torch.set_num_threads(1)
    state = process_state()
    tok = load_tokenizer("smollm2-135m")
    model = build_tiny_llama(tok)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(16):
        motif = rng.integers(100, 400, 6).tolist()
        n = 48 if equal else 48 - (i % 3) * 7
        rows.append({"input_ids": (motif * 10)[:n]})
    cfg = TrainConfig(target_modules=["q_proj", "v_proj", "o_proj", "up_proj"], max_steps=8,
                      batch_size=4 // state.num_processes, eval_every=2, learning_rate=5e-3, lora_dropout=0.0,
                      warmup_ratio=0.0)
    result, _ = train_stage(model, tok, cfg, tempfile.mkdtemp(prefix="ddp-"), rows[:12], rows[12:], desc="t",
                            progress=False)
    if state.is_main_process:
        Path(out).write_text(json.dumps(result["history"]))


def main() -> int:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    launcher = Path(sys.executable).parent / "accelerate"
    work = Path(tempfile.mkdtemp(prefix="ddp-curves-"))
    ok = True
    for equal in (True, False):
        tag = "equal" if equal else "unequal"
        one, two = work / f"one-{tag}.json", work / f"two-{tag}.json"
        args = [__file__, "--worker", "--equal" if equal else "--unequal"]
        for cmd, out in (([sys.executable] + args, one),
                         ([str(launcher), "launch", "--config_file", str(REPO / "recipes/accelerate/cpu_2proc.yaml")]
                          + args, two)):
            res = subprocess.run(cmd + [str(out)], env=env, capture_output=True, text=True, cwd=REPO)
            if res.returncode != 0:
                print(res.stderr[-3000:], file=sys.stderr)
                return 1
        a, b = json.loads(one.read_text()), json.loads(two.read_text())
        print(f"\nblocks of {tag} length: step, val loss 1 process, 2 processes, relative difference")
        worst = 0.0
        for x, y in zip(a, b, strict=True):
            rel = abs(x["val_loss"] - y["val_loss"]) / abs(x["val_loss"])
            worst = max(worst, rel)
            print(f"  {x['step']:>2}  {x['val_loss']:.7f}  {y['val_loss']:.7f}  {rel:.1e}")
        limit = 1e-6 if equal else 1e-3
        ok &= worst <= limit
        print(f"  largest relative difference {worst:.1e} (allowed {limit:g})")
    return 0 if ok else 1


if __name__ == "__main__":
    if "--worker" in sys.argv:
        worker(sys.argv[-1], "--equal" in sys.argv)
    else:
        raise SystemExit(main())
