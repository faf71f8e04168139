"""The seed network's own learning curves: the table the simulator replays (`bench/simulated.py`).

`python -m bench.curve_table [CONFIGS] [REPEATS]` trains CONFIGS configurations of the default
sweep's space (random search, no early stopping, every epoch recorded) for 15 epochs on the
20,000-image Fashion-MNIST subset, then trains the first REPEATS of them again with another
training seed, to measure the noise. About 50 minutes on 2 cores for 120 + 24. It writes
`bench/data/fashion_curves.json.gz`: per configuration its values, and per epoch val_loss,
val_acc and the epoch's wall seconds (one trial per core, as `tune run` runs them).
Fashion-MNIST: `apt-get install dataset-fashion-mnist`.
"""

from __future__ import annotations

import gzip
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import machine, progress
from bench.sweeps import sweep
from spaces import load_sweep

TABLE = Path(__file__).resolve().parent / "data" / "fashion_curves.json.gz"
EPOCHS = 15
SUBSET = 20_000


def document(configs: int) -> dict[str, Any]:
    """The default sweep's space as a random search without early stopping on Fashion-MNIST."""
    base = load_sweep("default").document()
    base.pop("source", None)
    return {**base, "name": "curve-table", "epochs": EPOCHS,
            "search": {"algorithm": "random", "num_samples": configs, "seed": 0},
            "scheduler": {"type": "fifo"}, "data": {"dataset": "fashion-mnist", "subset": SUBSET}}


def curves(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each trial's configuration and per-epoch validation metrics and seconds."""
    rows = []
    for trial in results["trials"]:
        history = sorted(trial["history"], key=lambda h: h["epoch"])
        if len(history) != EPOCHS:
            raise RuntimeError(f"trial {trial['trial_id']} ran {len(history)} of {EPOCHS} epochs")
        rows.append({"config": {k: v for k, v in trial["config"].items() if k != "epochs"},
                     "val_loss": [round(h["val_loss"], 5) for h in history],
                     "val_acc": [round(h["val_acc"], 5) for h in history],
                     "seconds": [round(h["epoch_seconds"], 3) for h in history]})
    return rows


def run(configs: int, repeats: int) -> dict[str, Any]:
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    with tempfile.TemporaryDirectory() as storage:
        first = sweep(document(configs), Path(storage), "table")
        rows = curves(first)
        searched = list(load_sweep("default").searched())
        again = document(repeats)
        again["space"] = {**again["space"], "seed": 1}
        again["search"] = {**again["search"], "start_from": [{k: r["config"][k] for k in searched}
                                                              for r in rows[:repeats]]}
        second = curves(sweep(again, Path(storage), "repeats")) if repeats else []
    return {"started": started, "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": machine(),
            "epochs": EPOCHS, "subset": SUBSET, "dataset": "fashion-mnist", "metric": "val_loss",
            "searched": searched, "trials": rows, "repeats": second}


def load_table(path: Path = TABLE) -> dict[str, Any]:
    with gzip.open(path, "rt") as f:
        return json.load(f)


def main() -> None:
    configs = int(sys.argv[1]) if len(sys.argv) > 1 else 120
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 24
    table = run(configs, repeats)
    TABLE.parent.mkdir(exist_ok=True)
    with gzip.open(TABLE, "wt") as f:
        json.dump(table, f, separators=(",", ":"))
    progress(f"wrote {TABLE}: {len(table['trials'])} configurations, {len(table['repeats'])} repeated")


if __name__ == "__main__":
    main()
