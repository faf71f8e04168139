"""Forgetting a user's imported modules between a scheduler's ticks, and only theirs."""

from __future__ import annotations

import importlib
import sys

from core.entrypoints import forget_modules_under


def test_only_the_users_own_modules_are_forgotten(tmp_path, monkeypatch):
    (tmp_path / "users_helper_mod.py").write_text("X = 1\n")
    installed = tmp_path / ".venv" / "lib" / "site-packages"
    installed.mkdir(parents=True)
    (installed / "installed_lib_mod.py").write_text("Y = 1\n")
    monkeypatch.syspath_prepend(str(installed))
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        importlib.import_module("users_helper_mod")
        importlib.import_module("installed_lib_mod")
        import search.commands.schedule  # noqa: F401  (a tool module: kept even if the folder held it)

        dropped = forget_modules_under([tmp_path, sys.modules["search"].__path__[0]])
        assert dropped == ["users_helper_mod"]
        assert "installed_lib_mod" in sys.modules and "search.commands.schedule" in sys.modules
    finally:
        sys.modules.pop("users_helper_mod", None)
        sys.modules.pop("installed_lib_mod", None)
