"""How fast a mistake is reported: `tune run` on bad sweep files, wall seconds per invocation."""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import progress, scale_argument, write_result

CASES = {"unknown_key": "searhc: {}\n", "bad_bound": "space: {lr: {loguniform: [0, 1]}}\n",
         "tabs": "space:\n\tlr: 1\n", "grace_above_max_t": "epochs: 2\nscheduler: {grace_period: 3}\n"}


def run(repeats: int) -> dict[str, Any]:
    seconds: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in CASES.items():
            path = Path(tmp) / f"{name}.yaml"
            path.write_text(text)
            seconds[name] = []
            for _ in range(repeats):
                started = time.perf_counter()
                proc = subprocess.run([sys.executable, "-m", "search", "run", str(path)], capture_output=True,
                                      cwd=tmp)
                seconds[name].append(time.perf_counter() - started)
                assert proc.returncode == 2
            progress(f"{name}: median {statistics.median(seconds[name]):.2f}s")
    medians = [statistics.median(v) for v in seconds.values()]
    return {"seconds": seconds, "median_s": statistics.median(medians), "max_median_s": max(medians), "goal_s": 1.0}


def main() -> None:
    scale = scale_argument(__doc__)
    write_result("cli_errors", scale, run(1 if scale == "smoke" else 5))


if __name__ == "__main__":
    main()
