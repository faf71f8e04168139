"""The seed's table reproduced: seed_bn and seed_skip as shipped, test accuracy mean ± std beside
the seed's numbers."""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench.common import progress, scale_argument, write_result
from bench.sweeps import sweep, test_accuracy_of_every_trial
from spaces import load_sweep

SEED_NUMBERS = {"seed_bn": {True: 0.949, False: 0.937}, "seed_skip": {True: 0.926, False: 0.925}}
SWITCH = {"seed_bn": "batch_norm", "seed_skip": "skip"}


SETTINGS = {"smoke": {"epochs": 1, "subset": 600}, "quick": {"epochs": 2, "subset": 6000},
            "full": {"epochs": None, "subset": None}}  # full: the files as shipped (30 and 10 epochs)


def run(settings: dict[str, Any]) -> dict[str, Any]:
    table = {}
    with tempfile.TemporaryDirectory() as storage:
        for name in ("seed_bn", "seed_skip"):
            document = load_sweep(name).model_dump(mode="json")
            if settings["epochs"]:  # smoke and quick only check the shape of the table
                document["epochs"] = settings["epochs"]
                document["data"]["subset"] = settings["subset"]
                document["scheduler"]["max_t"] = None
            results = sweep(document, Path(storage), name)
            test_acc = test_accuracy_of_every_trial(results, document)
            rows = {}
            for value in (True, False):
                accs = [test_acc[t["trial_id"]] for t in results["trials"] if t["config"][SWITCH[name]] == value]
                rows[str(value).lower()] = {"test_acc": accs, "mean": statistics.mean(accs),
                                            "std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                                            "seed": SEED_NUMBERS[name][value]}
                progress(f"{name} {SWITCH[name]}={value}: {statistics.mean(accs):.4f} "
                         f"(seed {SEED_NUMBERS[name][value]})")
            table[name] = {"switch": SWITCH[name], "epochs": document["epochs"], "rows": rows,
                           "wall_s": results["fit_seconds"]}
    return {**settings, "table": table}


def main() -> None:
    scale = scale_argument(__doc__)
    write_result("seed_table", scale, run(SETTINGS[scale]))


if __name__ == "__main__":
    main()
