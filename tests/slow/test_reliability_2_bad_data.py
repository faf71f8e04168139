"""Reliability 2: bad data files stop `tune run` with one line naming the file; nothing trains."""

from __future__ import annotations

import gzip
import os
import shutil
import struct
from pathlib import Path

import pytest

from tests.conftest import require, run_cli

pytestmark = pytest.mark.slow

LABELS = "t10k-labels-idx1-ubyte"


def raw(folder: Path, name: str) -> bytearray:
    return bytearray(gzip.decompress((folder / f"{name}.gz").read_bytes()))


def as_raw_file(folder: Path, name: str, content: bytes) -> Path:
    (folder / f"{name}.gz").unlink()
    (folder / name).write_bytes(bytes(content))
    return folder / name


def truncated_gzip(folder: Path) -> tuple[Path, str]:
    path = folder / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[: 1 << 20])
    return path, "damaged or truncated gzip data"


def wrong_magic(folder: Path) -> tuple[Path, str]:
    content = raw(folder, LABELS)
    content[:4] = struct.pack(">I", 0x00000000)
    return as_raw_file(folder, LABELS, content), "magic number is 0x00000000"


def count_mismatch(folder: Path) -> tuple[Path, str]:
    content = raw(folder, LABELS)
    as_raw_file(folder, LABELS, struct.pack(">II", 0x801, 9000) + content[8:9008])
    return folder / "t10k-images-idx3-ubyte.gz", "holds 10000 images, but t10k-labels-idx1-ubyte holds 9000"


def label_out_of_range(folder: Path) -> tuple[Path, str]:
    content = raw(folder, LABELS)
    content[8] = 10
    return as_raw_file(folder, LABELS, content), "label 10 found, but labels must be 0..9"


def checksum_mismatch(folder: Path) -> tuple[Path, str]:
    content = raw(folder, "t10k-images-idx3-ubyte")
    content[20_000] ^= 1
    return as_raw_file(folder, "t10k-images-idx3-ubyte", content), "SHA-256 of the content is"


@pytest.mark.parametrize("corrupt", [truncated_gzip, wrong_magic, count_mismatch, label_out_of_range,
                                     checksum_mismatch])
def test_bad_data_file_is_one_line_and_nothing_trains(corrupt, mnist_dir, tmp_path, base_env):
    folder = tmp_path / "mnist"
    shutil.copytree(mnist_dir, folder)
    path, expected = corrupt(folder)
    storage = tmp_path / "runs"
    result = run_cli(["run", "smoke", "--storage", str(storage), "--set", f"data.dir={folder}"], base_env)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2
    assert lines[-1] == lines[-1].strip() and lines[-1].startswith(f"tune: error: {path}: ")
    assert expected in lines[-1] and "Traceback" not in result.stderr
    assert "Ray local" not in result.stderr  # Ray was never started
    assert not storage.exists()  # nothing trained, nothing written


def test_unreadable_data_directory(mnist_dir, tmp_path, base_env):
    folder = tmp_path / "locked"
    shutil.copytree(mnist_dir, folder)
    folder.chmod(0)
    command = ["run", "smoke", "--storage", str(tmp_path / "runs"), "--set", f"data.dir={folder}"]
    try:
        if os.geteuid() == 0:  # root reads anything; in a user namespace it does not
            require(shutil.which("unshare") is not None, "unshare (util-linux)")
            import subprocess
            import sys

            proc = subprocess.run(["unshare", "--user", sys.executable, "-m", "search", *command], env=base_env,
                                  capture_output=True, text=True, timeout=120)
            returncode, stderr = proc.returncode, proc.stderr
        else:
            result = run_cli(command, base_env)
            returncode, stderr = result.returncode, result.stderr
    finally:
        folder.chmod(0o755)
    assert returncode == 2
    assert stderr.strip().splitlines()[-1] == f"tune: error: {folder}: cannot read the directory (Permission denied)"
