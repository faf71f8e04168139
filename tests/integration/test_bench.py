"""Every benchmark script runs end to end at its smallest scale and writes its numbers; the
report renders from them. (Benchmarks measure; they never assert timings.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, require
from trainables.data import DATASETS

pytestmark = pytest.mark.integration

EXPECTED = {
    "cli_errors": "median_s", "throughput": "profile_1_thread", "overhead": "ratio",
    "tracking_overhead": "mlflow_share_of_epoch_http", "sweep_efficiency": "efficiency",
    "driver_overhead": "driver_rss_mib",
    "search_quality": "comparisons", "simulated": "benchmarks", "seed_table": "table",
    "best_model": "median_test_acc", "seed_ablation": "table",
}


def test_smoke_run_of_every_benchmark_writes_results_and_a_report(base_env, tmp_path):
    env = {**base_env, "BENCH_RESULTS_DIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "bench", "smoke"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "--- search_quality (smoke)" in proc.stderr  # progress lines while it runs
    for name, key in EXPECTED.items():
        record = json.loads((tmp_path / "smoke" / f"{name}.json").read_text())
        assert key in record and record["machine"]["cores"] >= 1, name
    require(Path(DATASETS["fashion-mnist"].system_dirs[0]).is_dir(),
            "Fashion-MNIST (apt-get install dataset-fashion-mnist)")
    named = subprocess.run([sys.executable, "-m", "bench", "smoke", "search_quality_fashion"], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=900)
    assert named.returncode == 0, named.stderr[-3000:]
    fashion = json.loads((tmp_path / "smoke" / "search_quality_fashion.json").read_text())
    random_best = sorted(r["best_val_acc"] for r in fashion["runs"]["random_fifo"])
    assert fashion["target"] == sum(random_best) / 2  # the median of two seeds: set by the data
    report = subprocess.run([sys.executable, "-c", f"from pathlib import Path; from bench.report import "
                             f"write_benchmarks_md; write_benchmarks_md('smoke', Path(r'{tmp_path}/B.md'))"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stderr
    text = (tmp_path / "B.md").read_text()
    assert "| 1. Wrapper overhead" in text and "## The seed's table" in text
    efficiency = json.loads((tmp_path / "smoke" / "sweep_efficiency.json").read_text())["startup"]
    assert len(efficiency["reused_process_s"]) + len(efficiency["new_process_s"]) == 4  # every trial's start-up
    assert "| 3a. A trial's start-up in a reused trial process" in text
    assert "## Driver overhead over a long sweep" in text and "| 3b. Driver overhead: 6 trivial trials" in text
    assert "## Search quality on Fashion-MNIST" in text and "| 4c. Fashion-MNIST, Optuna + ASHA vs random" in text
    assert "## The seed's table, with statistics" in text and "seed_bn (2 seeds, 1 epochs) | test_acc" in text
    best = json.loads((tmp_path / "smoke" / "best_model.json").read_text())
    assert [run["seed"] for run in best["runs"]] == [0, 1]  # the default sweep once per sampler seed
    assert "| 7. Best test accuracy of `tune run default` (median over 2 sampler seed(s)" in text


def test_the_gpu_benchmark_s_cpu_dry_run_takes_every_step(base_env, tmp_path):
    """`make bench-gpu` needs CUDA; its --dry-run runs the same steps on the CPU: four trials at once,
    the epoch speed, and a checkpoint loaded on the CPU predicting what it predicts on the device."""
    env = {**base_env, "BENCH_RESULTS_DIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "bench.gpu", "--dry-run"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((tmp_path / "smoke" / "gpu.json").read_text())
    assert record["dry_run"] and record["device"] == "cpu" and record["counts"]["completed"] == 4
    # Trials this short start a second or two apart, so the first can end before the fourth starts: at least
    # two overlapping shows the trials ran side by side (the GPU run's longer trials all overlap).
    assert record["trials_at_once"] >= 2 and record["trials_per_hour"] > 0
    assert record["checkpoint_on_cpu"]["same_classes"] and record["epoch_speed"]["cpu"]["samples_per_s"] > 0
