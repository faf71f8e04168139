"""`make bench-gpu` (`python -m bench.gpu`): the GPU path proven in one command, on a machine with CUDA.

1. A 4-trial sweep with `resources.gpu: 0.25`: all four trials on one GPU at once (checked from their
   report times), trials per hour, and the GPU's utilisation and memory while it runs (`nvidia-smi`).
2. Epoch time and samples/s of one configuration on the GPU and on the CPU, one after the other.
3. A GPU-trained checkpoint loaded on the CPU predicts what it predicts on the GPU.

`--dry-run` runs the same steps on the CPU, on a small subset, where there is no CUDA (what the test
suite runs). Results: bench/results/gpu/gpu.json (dry: bench/results/smoke/gpu.json).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import mnist_dir, progress, write_result
from bench.sweeps import sweep

TRIALS = 4


class GpuMonitor:
    """Polls `nvidia-smi` once a second in a thread: utilisation (%) and memory used (MiB)."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self.available = shutil.which("nvidia-smi") is not None

    def __enter__(self) -> GpuMonitor:
        if self.available:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self.available:
            self._thread.join(timeout=5)

    def _poll(self) -> None:
        while not self._stop.wait(1.0):
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
                                      "--format=csv,noheader,nounits", "--id=0"],
                                     capture_output=True, text=True, timeout=5, check=True).stdout
                utilisation, memory = (float(v) for v in out.strip().split(","))
                self.samples.append((utilisation, memory))
            except (subprocess.SubprocessError, ValueError):
                continue

    def summary(self) -> dict[str, Any]:
        if not self.samples:
            return {"nvidia_smi": self.available, "samples": 0}
        utilisation = [u for u, _ in self.samples]
        return {"nvidia_smi": True, "samples": len(self.samples), "utilisation_mean_pct": sum(utilisation)
                / len(utilisation), "utilisation_max_pct": max(utilisation),
                "memory_max_mib": max(m for _, m in self.samples)}


def most_at_once(results: dict[str, Any]) -> int:
    """The most trials that were training at the same moment (from each trial's first and last report)."""
    spans = []
    for trial in results["trials"]:
        history = trial["history"]
        if history:
            first = history[0]
            spans.append((first["timestamp"] - first.get("epoch_seconds", 0), history[-1]["timestamp"]))
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running = most = 0
    for _, change in events:
        running += change
        most = max(most, running)
    return most


def epoch_speed(device: str, subset: int | None, epochs: int) -> dict[str, float]:
    """One configuration (bn+skip, batch 128) trained on `device`: seconds per epoch after a warm-up."""
    import torch

    from trainables.data import load_data
    from trainables.train import TrainingRun, TrainParams

    data = load_data("mnist", mnist_dir(), subset=subset)
    run = TrainingRun(TrainParams(epochs=epochs + 1), data.without_test(), device)
    run.run_epoch()  # warm-up: kernels, allocator
    started = time.perf_counter()
    for _ in range(epochs):
        run.run_epoch()
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - started) / epochs
    return {"epoch_s": seconds, "samples_per_s": len(data.train) / seconds}


def same_predictions_on_cpu(checkpoint: str, config: dict[str, Any], device: str, subset: int | None
                            ) -> dict[str, Any]:
    """The checkpoint's network on `device` and on the CPU: the same classes, logits within 1e-4."""
    import torch
    from ray import tune

    from trainables.data import load_data
    from trainables.train import as_tensors
    from trainables.trainable import load_checkpoint_model

    images, _ = as_tensors(load_data("mnist", mnist_dir(), subset=subset).test)
    images = images[:512]
    with tune.Checkpoint(checkpoint).as_directory() as directory:
        on_cpu = load_checkpoint_model(directory, config)
        on_device = load_checkpoint_model(directory, config).to(device)
    with torch.inference_mode():
        cpu_logits = on_cpu(images)
        device_logits = on_device(images.to(device)).cpu()
    return {"images": len(images), "same_classes": bool(torch.equal(cpu_logits.argmax(1), device_logits.argmax(1))),
            "max_logit_difference": float((cpu_logits - device_logits).abs().max())}


def run(dry: bool) -> dict[str, Any]:
    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not dry:
        raise SystemExit("bench-gpu: no CUDA device here; `python -m bench.gpu --dry-run` runs the same steps "
                         "on the CPU")
    device = "cuda" if cuda and not dry else "cpu"
    subset, epochs = (6000, 2) if dry else (None, 3)
    document = {"name": "bench-gpu", "epochs": epochs,
                "space": {"lr": {"loguniform": [1e-3, 5e-3]}, "batch_norm": {"choice": [True, False]}},
                "search": {"algorithm": "random", "num_samples": TRIALS, "max_concurrent_trials": TRIALS},
                "scheduler": {"type": "fifo"},
                "resources": {"cpu": 0.5 if dry else 1, "gpu": 0 if device == "cpu" else 1 / TRIALS},
                "data": {"subset": subset}}
    progress(f"{TRIALS} trials at once on {device} (resources {document['resources']})")
    with tempfile.TemporaryDirectory() as storage, GpuMonitor() as monitor:
        results = sweep(document, Path(storage), "gpu")
        at_once = most_at_once(results)
        best = results["best"]
        check = same_predictions_on_cpu(best["checkpoint"], {**best["config"], "epochs": epochs}, device, subset)
    speeds = {"cpu": epoch_speed("cpu", subset, 1)}
    if device == "cuda":
        speeds["cuda"] = epoch_speed("cuda", subset, 2)
    payload = {"device": device, "cuda": cuda, "dry_run": dry, "trials": TRIALS,
               "gpu_per_trial": document["resources"]["gpu"], "trials_at_once": at_once,
               "sweep_wall_s": results["fit_seconds"], "trials_per_hour": TRIALS * 3600 / results["fit_seconds"],
               "counts": results["counts"], "gpu_monitor": monitor.summary(), "epoch_speed": speeds,
               "checkpoint_on_cpu": check}
    if cuda and not dry:
        payload["gpu_name"] = torch.cuda.get_device_name(0)
        payload["gpu_vs_cpu_samples_per_s"] = speeds["cuda"]["samples_per_s"] / speeds["cpu"]["samples_per_s"]
    progress(f"{at_once} of {TRIALS} trials at once; {payload['trials_per_hour']:.0f} trials/h; checkpoint on CPU: "
             f"same classes {check['same_classes']}, max logit difference {check['max_logit_difference']:.2g}")
    return payload


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="the same steps on the CPU, small (no CUDA needed)")
    args = parser.parse_args()
    write_result("gpu", "smoke" if args.dry_run else "gpu", run(args.dry_run))


if __name__ == "__main__":
    main()
