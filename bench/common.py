"""What every benchmark shares: the machine's description, progress lines, result files."""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(os.environ.get("BENCH_RESULTS_DIR") or Path(__file__).resolve().parent / "results")
SCALES = ("smoke", "quick", "full")


def machine() -> dict[str, Any]:
    """CPU model, cores, memory and library versions of this machine."""
    import torch

    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    memory_kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                      if line.startswith("MemTotal"))
    return {"cpu": model, "cores": os.cpu_count(), "memory_gib": round(memory_kib / 2**20, 1),
            "python": platform.python_version(), "torch": torch.__version__,
            "torch_threads_default": torch.get_num_threads()}


def progress(message: str) -> None:
    """One progress line on stderr, with the time, so a long benchmark is never silent."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def write_result(name: str, scale: str, payload: dict[str, Any]) -> Path:
    """bench/results/<scale>/<name>.json with the date and the machine beside the numbers."""
    folder = RESULTS / scale
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    record = {"benchmark": name, "scale": scale, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
              "machine": machine(), **payload}
    path.write_text(json.dumps(_finite(record), indent=2, default=str))
    progress(f"wrote {path}")
    return path


def _finite(value: Any) -> Any:
    """JSON has no inf or NaN: they become null (e.g. a target never reached)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def scale_argument(description: str | None) -> str:
    """The --scale a benchmark script runs at: smoke (a test), quick (make bench) or full."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--scale", choices=SCALES, default="quick")
    return parser.parse_args().scale


def mnist_dir() -> str | None:
    return os.environ.get("MNIST_DIR")
