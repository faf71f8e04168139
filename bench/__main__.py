"""`python -m bench smoke|quick|full`: every benchmark at one scale, then (full) BENCHMARKS.md.

smoke is what the test suite runs (a minute or two), quick is `make bench` (under 15 minutes on
2 cores), full is `make bench-full` (several hours: it runs the seed's experiments and the
default sweep, and three seeds of each search-quality arm).
"""

from __future__ import annotations

import sys
import time

from bench import (
    best_model,
    cli_errors,
    driver_overhead,
    overhead,
    search_quality,
    seed_ablation,
    seed_table,
    simulated,
    sweep_efficiency,
    throughput,
    tracking_overhead,
)
from bench.common import SCALES, progress, write_result
from bench.report import NAMED_ONLY

ORDER = [
    ("cli_errors", lambda scale: cli_errors.run(1 if scale == "smoke" else 5)),
    ("throughput", lambda scale: throughput.run(throughput.SETTINGS[scale])),
    ("overhead", lambda scale: overhead.run(overhead.SETTINGS[scale])),
    ("tracking_overhead", lambda scale: tracking_overhead.run(tracking_overhead.SETTINGS[scale])),
    ("sweep_efficiency", lambda scale: sweep_efficiency.run(sweep_efficiency.SETTINGS[scale])),
    ("driver_overhead", lambda scale: driver_overhead.run(driver_overhead.SETTINGS[scale])),
    ("search_quality", lambda scale: search_quality.run(search_quality.SETTINGS[scale])),
    # Searchers and schedulers in simulated time: hundreds of trials, 20+ seeds, 4 and 32 workers.
    ("simulated", lambda scale: simulated.run(simulated.SETTINGS[scale], scale)),
    ("seed_table", lambda scale: seed_table.run(seed_table.SETTINGS[scale])),
    ("seed_ablation", lambda scale: seed_ablation.run(seed_ablation.SETTINGS[scale])),
    ("best_model", lambda scale: best_model.run(best_model.SETTINGS[scale])),
    # Only when named: the two Optuna arms of search_quality again (after a change to the bridge).
    ("bridge_vs_stock", lambda scale: search_quality.run(search_quality.SETTINGS[scale], search_quality.BRIDGE_ARMS)),
    # Only when named: the three arms on Fashion-MNIST, 5 seeds (about half an hour on 2 cores).
    ("search_quality_fashion", lambda scale: search_quality.run(
        search_quality.FASHION_SMOKE if scale == "smoke" else search_quality.FASHION)),
]


def main(argv: list[str]) -> None:
    scale = argv[0] if argv else "quick"
    only = set(argv[1:])
    if scale not in SCALES:
        raise SystemExit(f"usage: python -m bench {{{'|'.join(SCALES)}}} [BENCHMARK ...]")
    started = time.time()
    for name, run in ORDER:
        if (only and name not in only) or (not only and name in NAMED_ONLY):
            continue
        if name == "best_model" and scale == "quick":
            continue  # the 30-minute default sweep belongs to the full set
        progress(f"--- {name} ({scale})")
        write_result(name, scale, run(scale))
    progress(f"done in {(time.time() - started) / 60:.1f} min")
    if scale == "full":
        from bench.report import write_benchmarks_md

        write_benchmarks_md()


if __name__ == "__main__":
    main(sys.argv[1:])
