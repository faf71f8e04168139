"""The README's command table names every flag of every command, so the two cannot drift apart."""

from __future__ import annotations

import pytest

from search.cli import cli
from tests.conftest import REPO

README = (REPO / "README.md").read_text()


def command_row(name: str) -> str:
    rows = [line for line in README.splitlines() if line.startswith(f"| `tune {name} ")]
    assert len(rows) == 1, f"the README's command table has {len(rows)} rows for `tune {name}`"
    return rows[0]


@pytest.mark.parametrize("name", sorted(cli.commands))
def test_every_flag_of_a_command_is_in_its_readme_row(name):
    row = command_row(name)
    flags = [opt for param in cli.commands[name].params for opt in param.opts if opt.startswith("--")]
    missing = [flag for flag in flags if flag not in row]
    assert not missing, f"`tune {name}` flags missing from its README row: {missing}"


def test_every_flag_in_the_readme_rows_exists():
    for name, command in cli.commands.items():
        known = {opt for param in command.params for opt in param.opts} | {"--help"}
        named = {word.strip("[]`…").split("=")[0] for word in command_row(name).split("|")[1].split()
                 if word.strip("[]`…").startswith("--")}
        assert named <= known, f"`tune {name}`: the README names flags it does not have: {named - known}"
