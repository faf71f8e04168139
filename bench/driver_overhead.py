"""Driver overhead over a long sweep: N trials of a trivial trainable (it sleeps, then reports
once) on 2 slots through the tool's whole path (Optuna's TPE, Tune, an MLflow child run per
trial, results.json): `tuner.fit`'s wall time ÷ the ideal (N × sleep ÷ slots), seconds per trial beyond the
sleep, and the driver's memory as the sweep grows (resident set, sampled every second).

Anchor: Ray Tune's own release test runs 10,000 one-second trials on 16 CPUs in 715 s against
a 625 s minimum (1.14×, 0.14 s per trial).
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import progress, scale_argument, write_result
from bench.sweeps import sweep

SLOTS = 2
TRAINABLE = Path(__file__).resolve().parent / "trivial"
SETTINGS = {"smoke": {"trials": 6, "seconds": 0.2}, "quick": {"trials": 100, "seconds": 1.0},
            "full": {"trials": 1000, "seconds": 1.0}}


def resident_bytes() -> int:
    """This process's resident set (Linux)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class MemorySampler:
    """This process's resident set and the number of trial folders in `experiment`, every `every_s`
    seconds, in a thread, until the `with` block ends."""

    def __init__(self, experiment: Path, every_s: float = 1.0) -> None:
        self.experiment, self.every_s = experiment, every_s
        self.samples: list[tuple[int, int]] = []  # (trials so far, resident bytes)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._done.is_set():
            trials = sum(1 for _ in self.experiment.glob("*/result.json")) if self.experiment.is_dir() else 0
            self.samples.append((trials, resident_bytes()))
            self._done.wait(self.every_s)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        self._thread.join()

    def mib_when(self, trials: int) -> float | None:
        """Resident MiB at the first sample that saw `trials` trials."""
        return next((rss / 2**20 for seen, rss in self.samples if seen >= trials), None)


def run(settings: dict[str, Any]) -> dict[str, Any]:
    trials, seconds = settings["trials"], settings["seconds"]
    document = {"name": "bench-driver", "trainable": "sleeper:sleep_then_report", "code": str(TRAINABLE),
                "metric": "score", "mode": "max", "epochs": 1,
                "space": {"x": {"uniform": [0.0, 1.0]}, "seconds": seconds},
                "search": {"algorithm": "optuna", "num_samples": trials, "max_concurrent_trials": SLOTS},
                "scheduler": {"type": "fifo"}, "resources": {"cpu": 1}}
    progress(f"{trials} trials that sleep {seconds:g} s and report once, {SLOTS} at a time")
    with tempfile.TemporaryDirectory() as storage, MemorySampler(Path(storage) / "driver") as memory:
        before = resident_bytes() / 2**20
        started = time.monotonic()
        results = sweep(document, Path(storage), "driver")
        wall = time.monotonic() - started
    fit = results["fit_seconds"]
    ideal = trials * seconds / SLOTS
    completed = results["counts"]["completed"]
    # From the first trial on, the run's end included (before it, memory holds whatever this process did earlier).
    peak = max((rss for seen, rss in memory.samples if seen), default=0) / 2**20
    progress(f"{completed} of {trials} completed; tuner.fit {fit:.0f} s against an ideal {ideal:.0f} s "
             f"({fit / ideal:.2f}×, {(fit * SLOTS - trials * seconds) / trials:.3f} s per trial beyond the sleep); "
             f"driver resident memory peak from the first trial on {peak:.0f} MiB")
    return {**settings, "slots": SLOTS, "completed": completed, "ideal_s": ideal, "fit_s": fit,
            "wall_with_setup_s": wall, "ratio": fit / ideal,
            "overhead_s_per_trial": (fit * SLOTS - trials * seconds) / trials,
            # After imports and Ray's start, as the trials go by: flat if the driver keeps no per-trial state.
            "driver_rss_mib": {"before_sweep": before, "peak": peak, "end": memory.samples[-1][1] / 2**20,
                               "by_trials_started": {n: memory.mib_when(n) for n in sorted(
                                   {1, *(trials * k // 4 for k in (1, 2, 3, 4))} - {0})}},
            "anchor": "Ray Tune release test: 10,000 one-second trials on 16 CPUs, 715 s against 625 s (1.14x)"}


def main() -> None:
    scale = scale_argument(__doc__)
    write_result("driver_overhead", scale, run(SETTINGS[scale]))


if __name__ == "__main__":
    main()
