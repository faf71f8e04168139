"""Fractional GPUs: `resources.gpu: 0.25` lets four trials share one GPU, each training on CUDA.

Needs a CUDA device; on a machine without one it is skipped (CI machines have none), unless
SWEEP_TESTS_REQUIRE_GPU=1 promises one: then a missing GPU fails the test."""

from __future__ import annotations

import json
import os

import pytest
import torch

from search.engine.trials import tune_result_rows
from tests.conftest import REQUIRE_GPU_ENV, require, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.gpu]


def test_four_trials_share_one_gpu_and_train_on_cuda(base_env, tmp_path):
    require(torch.cuda.is_available(), "a CUDA GPU", promised_by=REQUIRE_GPU_ENV)
    result = run_cli(["run", "smoke", "--storage", str(tmp_path), "--name", "gpu", "--set", "resources.gpu=0.25",
                      "--set", "resources.cpu=1", "--set", "search.num_samples=4", "--set", "scheduler.type=fifo",
                      "--set", "epochs=3"], base_env)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = tune_result_rows(tmp_path / "gpu")
    assert len(rows) == 4
    assert all(row["device"] == "cuda" for trial in rows.values() for row in trial)
    spans = [(trial[0]["timestamp"] - trial[0]["time_this_iter_s"], trial[-1]["timestamp"]) for trial in rows.values()]
    overlapping = max(sum(start <= t <= end for start, end in spans) for t, _ in spans)
    if torch.cuda.device_count() == 1 and (os.cpu_count() or 1) >= 4:
        assert overlapping >= 2, "trials did not share the GPU"
    results = json.loads((tmp_path / "gpu" / "results.json").read_text())
    assert results["counts"]["completed"] == 4
