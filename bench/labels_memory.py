"""Peak memory of label generation on the first N Sherlock blocks, in a fresh process.

    python bench/labels_memory.py 16 --dictionary anchors.yaml [--batch-size 4]

Prints one JSON line: resident memory after set-up (model, reinforced adapter, blocks, translator), the peak
resident memory of the whole process (VmHWM), the peak reached during labelling alone (the process's high-water
mark is reset before labelling where the kernel allows it), and the Python-object memory that the label rows
hold at the end (tracemalloc: torch tensors are not counted there; the rows are plain lists). Run it for N and 2N
blocks: the peak must not grow with the number of blocks (only the rows do, by a few bytes per token per alpha).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ALPHAS, load_base, make_reinforced, proc_status, sherlock_blocks  # noqa: E402


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to /proc/self/clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("blocks", type=int)
    ap.add_argument("--dictionary", required=True)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)

    from llm_unlearn.whp.anchors import AnchorDictionary
    from llm_unlearn.whp.labels import LogitSource, label_blocks
    from llm_unlearn.whp.translation import Translator

    base, tok = load_base(args.threads)
    reinforced = make_reinforced(base)
    del base  # the labels stage holds one copy of the weights (the adapter is switched off for the base pass)
    blocks = sherlock_blocks(tok, args.blocks)
    translator = Translator(AnchorDictionary.load(args.dictionary), tok)
    source = LogitSource(reinforced)
    import gc

    gc.collect()
    rss_setup = proc_status("VmRSS")
    hwm_setup = proc_status("VmHWM")
    reset = _reset_peak()
    tracemalloc.start()
    t0 = time.perf_counter()
    rows, stats = label_blocks(source, blocks, list(range(len(blocks))), translator, ALPHAS, args.batch_size, 0,
                               tok.pad_token_id, progress=False)
    seconds = time.perf_counter() - t0
    rows_bytes, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    out = {"blocks": len(blocks), "tokens": sum(len(b) for b in blocks), "batch_size": args.batch_size,
           "seconds": seconds, "rss_after_setup": rss_setup, "peak_rss_setup": hwm_setup,
           "peak_rss_labelling": proc_status("VmHWM") if reset else None, "peak_rss_process": None,
           "rows_python_bytes": rows_bytes, "rows": len(rows), "supervised": stats.supervised}
    out["peak_rss_process"] = max(hwm_setup, proc_status("VmHWM"))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
