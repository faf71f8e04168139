"""Reliability 5: an unwritable or full storage path is reported before any trial (or Ray) starts."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO, require, run_cli

pytestmark = pytest.mark.slow


def test_storage_under_a_file_is_reported(base_env, tmp_path):
    (tmp_path / "not-a-dir").write_text("x")
    storage = tmp_path / "not-a-dir" / "runs"
    result = run_cli(["run", "smoke", "--storage", str(storage)], base_env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"tune: error: storage {storage}: cannot write there (Not a directory)")
    assert "Ray local" not in result.stderr


def test_unwritable_storage_is_reported(base_env, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    command = [sys.executable, "-m", "search", "run", "smoke", "--storage", str(locked / "runs")]
    require(shutil.which("unshare") is not None, "unshare (util-linux)")
    # Root writes anywhere; in a user namespace it is an ordinary user.
    proc = subprocess.run(["unshare", "--user", *command], env=base_env, cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    locked.chmod(0o755)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f"tune: error: storage {locked / 'runs'}: cannot write there (Permission denied)")


def test_full_storage_is_reported(base_env, tmp_path):
    require(shutil.which("unshare") is not None, "unshare (util-linux)")
    mount = tmp_path / "tiny"
    mount.mkdir()
    script = (f"mount -t tmpfs -o size=1m tmpfs {mount} && "
              f"exec {sys.executable} -m search run smoke --storage {mount}/runs")
    proc = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script], env=base_env,
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"tune: error: storage {mount}/runs: only ")
    assert last.endswith(" MiB free, but a sweep needs at least 200 MiB for checkpoints and results")
    assert "Ray local" not in proc.stderr
