"""Run a Python module as ``__main__`` and write the process's peak resident memory to a JSON file at exit.

    python bench/peak_rss.py OUT.json llm_unlearn run RECIPE --out RUN --until labels

The peak is the kernel's high-water mark of this process's own memory (``VmHWM`` in /proc/self/status), read at
exit. ``getrusage`` of a child, as seen by its parent, is not usable for this: Linux carries the parent's
high-water mark into a child across fork/vfork + exec, so a child started from a big process reports at least the
parent's size. Grandchildren (none in a single-process run) are reported separately.
"""

from __future__ import annotations

import atexit
import json
import resource
import runpy
import sys
from pathlib import Path


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    out, module = sys.argv[1], sys.argv[2]
    sys.argv = [module] + sys.argv[3:]

    def report():
        Path(out).write_text(json.dumps({
            "peak_rss_bytes": _status("VmHWM"),
            "children_peak_rss_bytes": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024,
        }))

    atexit.register(report)
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
