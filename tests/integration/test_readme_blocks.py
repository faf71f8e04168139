"""The README's blocks marked runnable, run as written in the folder of a `tune run quick` (here the
smoke budget under the name `quick`), as a user would paste them after `make run`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO, run_cli

pytestmark = pytest.mark.integration

MARKER = "<!-- runnable: in the folder of a `tune run quick`"
BLOCK = re.compile(r"^(?P<marker><!-- runnable:[^\n]*-->)\n```(?P<lang>bash|python)\n(?P<code>.*?)^```", re.M | re.S)


def runnable_blocks() -> list[tuple[str, str]]:
    readme = (REPO / "README.md").read_text()
    blocks = [(m["lang"], m["code"]) for m in BLOCK.finditer(readme)]
    assert len(blocks) == readme.count(MARKER) >= 3, "a runnable marker without a ```bash or ```python block under it"
    return blocks


@pytest.fixture(scope="module")
def quick_folder(tmp_path_factory, ray_head, mnist_dir):
    """A folder where `tune run quick` ran (smoke's budget), with two digit images beside it."""
    from trainables.data import load_data

    folder = tmp_path_factory.mktemp("my-project")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("MLFLOW_TRACKING_URI", None)
    result = run_cli(["run", "smoke", "--set", "name=quick", "--address", ray_head.address], env, cwd=folder)
    assert result.returncode == 0, result.stderr[-3000:]
    test = load_data("mnist", mnist_dir, subset=1000).test
    for name, index in (("my_digit.png", 0), ("another.jpg", 1)):
        pixels = (np.asarray(test.images[index, 0]) * 0.3081 + 0.1307) * 255
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / name)
    return folder, env


@pytest.mark.parametrize("lang, code", runnable_blocks(), ids=lambda v: v.splitlines()[0][:40] if "\n" in v else v)
def test_a_runnable_readme_block_runs_as_written(quick_folder, lang, code):
    folder, env = quick_folder
    env = {**env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"}  # .venv/bin: `tune`
    command = ["bash", "-euo", "pipefail", "-c", code] if lang == "bash" else [sys.executable, "-c", code]
    result = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{lang} block:\n{code}\n{result.stderr[-3000:]}"
    if lang == "bash":
        assert re.search(r"^my_digit\.png: \d \(p [01]\.\d{3}; then", result.stdout, re.M), result.stdout
