"""What every benchmark shares: the machine's description, progress lines, result files."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


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


def write_result(name: str, payload: dict[str, Any]) -> Path:
    """bench/results/<name>.json with the date and the machine beside the numbers."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    record = {"benchmark": name, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": machine(), **payload}
    path.write_text(json.dumps(record, indent=2, default=str))
    progress(f"wrote {path.relative_to(RESULTS.parent.parent)}")
    return path


def mnist_dir() -> str | None:
    return os.environ.get("MNIST_DIR")
