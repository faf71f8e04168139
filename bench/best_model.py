"""The best model `tune run default` finds on this machine, and how long it takes."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from bench.common import progress, scale_argument, write_result
from bench.sweeps import sweep
from spaces import load_sweep

SETTINGS = {"smoke": {"num_samples": 2, "epochs": 1, "subset": 600}, "quick": None, "full": {}}


def run(settings: dict[str, Any]) -> dict[str, Any]:
    document = load_sweep("default").model_dump(mode="json")
    if settings:  # smoke: the same path on a tiny budget
        document["search"]["num_samples"] = settings["num_samples"]
        document["epochs"] = settings["epochs"]
        document["scheduler"]["max_t"] = None
        document["data"]["subset"] = settings["subset"]
    with tempfile.TemporaryDirectory() as storage:
        results = sweep(document, Path(storage), "default")
    best = results["best"]
    progress(f"best test_acc {best['test_acc']:.4f} in {results['wall_seconds']:.0f}s")
    return {"best": best, "wall_s": results["wall_seconds"], "fit_s": results["fit_seconds"],
            "counts": results["counts"], "goal_test_acc": 0.992, "lenet5_reference": 0.9905}


def main() -> None:
    scale = scale_argument(__doc__)
    if SETTINGS[scale] is None:
        raise SystemExit("best_model runs the 30-minute default sweep: use --scale full (or smoke)")
    write_result("best_model", scale, run(SETTINGS[scale]))


if __name__ == "__main__":
    main()
