"""Reliability 1: bad sweep files and flags.

Each case: exit code 2, one line on stderr naming the file (or flag) and the key, no
traceback, Ray (and PyTorch, MLflow) never imported, nothing written. The CLI does not
import them before the input is valid, which is what keeps these errors well under a
second (measured in bench/cli_errors.py, not timed here).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow

# Runs the CLI and reports which heavy libraries the process imported before it exited.
PROBE = (
    "import atexit, sys\n"
    "atexit.register(lambda: sys.stderr.write('\\nHEAVY=' + ','.join(m for m in ('ray', 'torch', 'mlflow') "
    "if m in sys.modules) + '\\n'))\n"
    "from search.cli import main\n"
    "main(sys.argv[1:])\n"
)

ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
    for i in range(8))

FILE_CASES = {
    "tabs": ("space:\n\tlr: 0.1\n", "found character '\\t' that cannot start any token"),
    "unknown_key": ("epochs: 2\nsearhc: {}\n", "searhc: unknown key"),
    "unknown_space_key": ("space: {learning_rate: 0.1}\n", "space.learning_rate: unknown key"),
    "wrong_type": ("epochs: three\n", "epochs: Input should be a valid integer"),
    "loguniform_zero": ("space: {lr: {loguniform: [0, 0.1]}}\n", "space.lr.loguniform.low"),
    "low_above_high": ("space: {dropout: {uniform: [0.4, 0.1]}}\n", "space.dropout.uniform: low is 0.4"),
    "empty_choice": ("space: {batch_size: {choice: []}}\n", "space.batch_size.choice"),
    "grace_above_max_t": ("epochs: 4\nscheduler: {grace_period: 6}\n", "scheduler.grace_period is 6"),
    "num_samples_zero": ("search: {num_samples: 0}\n", "search.num_samples"),
    "num_samples_negative": ("search: {num_samples: -5}\n", "search.num_samples"),
    "gpu_fraction_above_1": ("resources: {gpu: 1.5}\n", "gpu is 1.5"),
    "unknown_dataset": ("data: {dataset: cifar10}\n", "data.dataset"),
    "metric_on_test_set": ("metric: test_acc\n", "metric: 'test_acc' is not one of val_loss"),
    "empty_file": ("", "is empty"),
    "alias_bomb": (ALIAS_BOMB, "YAML aliases (*name) are not allowed"),
    "python_tag": ("x: !!python/object/apply:os.system ['touch pwned']\n", "could not determine a constructor"),
    "not_a_mapping": ("- 1\n- 2\n", "holds a list, but must hold a mapping"),
}


def run_probe(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, list[str], str]:
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=cwd, env={**env, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=120)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    heavy = next(line for line in lines if line.startswith("HEAVY="))
    return proc.returncode, [line for line in lines if line != heavy], heavy.removeprefix("HEAVY=")


def assert_one_line_error(cwd: Path, env: dict[str, str], args: list[str], *expected: str) -> None:
    before = sorted(cwd.rglob("*"))
    code, lines, heavy = run_probe(args, cwd, env)
    assert code == 2, lines
    assert len(lines) == 1 and lines[0].startswith("tune: error: "), lines
    for text in expected:
        assert text in lines[0], (text, lines[0])
    assert heavy == "", f"imported {heavy} before rejecting the input"
    assert sorted(cwd.rglob("*")) == before, "something was written"


@pytest.fixture
def workdir(tmp_path):
    """An empty working directory: the default storage ./runs would appear here if written."""
    (tmp_path / "cwd").mkdir()
    return tmp_path / "cwd"


@pytest.mark.parametrize("case", sorted(FILE_CASES))
def test_bad_sweep_file(case, workdir, tmp_path, base_env):
    text, expected = FILE_CASES[case]
    sweep = tmp_path / f"{case}.yaml"
    sweep.write_text(text)
    assert_one_line_error(workdir, base_env, ["run", str(sweep)], str(sweep), expected)
    assert not (workdir / "pwned").exists()


def test_missing_file(workdir, base_env):
    assert_one_line_error(workdir, base_env, ["run", "no_such_sweep"], "no such sweep file",
                          "shipped sweeps: default")


def test_directory_instead_of_file(workdir, tmp_path, base_env):
    (tmp_path / "adir.yaml").mkdir()
    assert_one_line_error(workdir, base_env, ["run", str(tmp_path / "adir.yaml")], "is a directory")


def test_non_utf8_bytes(workdir, tmp_path, base_env):
    sweep = tmp_path / "latin1.yaml"
    sweep.write_bytes("description: caf\xe9\n".encode("latin-1"))
    assert_one_line_error(workdir, base_env, ["run", str(sweep)], str(sweep), "not UTF-8 text (byte 0xe9")


def test_huge_file(workdir, tmp_path, base_env):
    sweep = tmp_path / "huge.yaml"
    sweep.write_text("# padding\n" * 200_000)
    assert_one_line_error(workdir, base_env, ["run", str(sweep)], str(sweep), "sweep files must be <=")


@pytest.mark.parametrize("override, expected", [
    ("learning_rate=0.1", "--set learning_rate: unknown key"),
    ("search.nums=3", "--set search.nums: unknown key 'nums' in search"),
    ("lr", "--set lr: must be KEY=VALUE"),
    ("epochs=[1,", "--set epochs: value '[1,' is not valid YAML"),
    ("lr=-1", "space.lr: Input should be greater than 0"),
])
def test_bad_override(override, expected, workdir, base_env):
    assert_one_line_error(workdir, base_env, ["run", "smoke", "--set", override], expected)


@pytest.mark.parametrize("args, expected", [
    (["run", "smoke", "--resume", "--set", "epochs=2"], "--resume continues a sweep as it was started"),
    (["run", "smoke", "--resume", "--dry-run"], "--resume and --dry-run exclude each other"),
    (["run", "smoke", "--num-samples", "3", "--set", "search.num_samples=4"], "--num-samples and --set"),
    (["train", "--epochs", "2", "--set", "epochs=3"], "--epochs and --set epochs=3 both set epochs"),
    (["schedule", "smoke", "--cron", "61 * * * *"], "--cron '61 * * * *': not a cron expression"),
    (["schedule", "smoke", "--cron", "0 * * * *", "--once", "--max-runs", "2"], "--once runs one tick"),
    (["schedule", "smoke", "--cron", "0 * * * *", "--timezone", "Mars/Olympus"], "unknown time zone"),
])
def test_conflicting_or_bad_flags(args, expected, workdir, base_env):
    assert_one_line_error(workdir, base_env, args, expected)
