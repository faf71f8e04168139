"""A user's own code named in a sweep file: `package.module:callable`, resolved by import.

The sweep file's folder (or the `code:` folder it names) is put first on `sys.path`, in
this process and, through Ray's runtime environment, in every trial on every node. Every
way a reference can fail is one `UserError` naming the key, the reference and the cause.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from core.errors import UserError

REF_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$"
REF_RULE = "package.module:callable"


def is_ref(value: str) -> bool:
    """Whether `value` is written as `package.module:callable` (not a built-in name)."""
    return ":" in value


def check_ref(value: str, key: str) -> None:
    if not re.fullmatch(REF_PATTERN, value):
        raise UserError(f"{key}: {value!r} is not a callable reference ({REF_RULE}, e.g. my_models.wide:build)")


TOOL_PACKAGES = ("core", "search", "spaces", "trainables", "bench")  # never the user's, wherever they lie
INSTALLED = {".venv", "venv", "site-packages", "dist-packages"}


def forget_modules_under(folders: Iterable[str | Path]) -> list[str]:
    """Drop from `sys.modules` the user's modules imported from these folders, so that the next
    import reads their files again (a scheduler's next tick sees an edit). This tool's own packages
    and anything installed in a virtualenv under a folder stay. Returns the names dropped."""
    roots = [Path(f).resolve() for f in folders]
    dropped = []
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if not file or name.partition(".")[0] in TOOL_PACKAGES:
            continue
        path = Path(file).resolve()
        if any(path.is_relative_to(root) and not INSTALLED & set(path.relative_to(root).parts) for root in roots):
            del sys.modules[name]
            dropped.append(name)
    importlib.invalidate_caches()
    return dropped


def add_to_path(folders: Iterable[str | Path]) -> None:
    """Put these folders first on `sys.path` (once each), so the user's modules import."""
    for folder in reversed([str(Path(f).resolve()) for f in folders]):
        if folder not in sys.path:
            sys.path.insert(0, folder)


def check_origin(ref: str, key: str, folders: Iterable[Path], packages: Iterable[str] = ()) -> None:
    """Refuse a callable whose module lies outside what a sweep file may name code from: its code
    folders, this tool's packages, and the installed packages it lists under `packages:`. The
    module is found, not imported: nothing outside those runs (`model: os:system` is refused)."""
    import importlib.util

    check_ref(ref, key)
    top = ref.partition(":")[0].partition(".")[0]
    if top in TOOL_PACKAGES or top in set(packages):
        return
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        return  # `resolve` says it does not exist, with where it looked
    places = [spec.origin] if spec.has_location and spec.origin else list(spec.submodule_search_locations or [])
    roots = [Path(f).resolve() for f in folders]
    for place in map(Path, places):
        path = place.resolve()
        if any(path.is_relative_to(r) and not INSTALLED & set(path.relative_to(r).parts) for r in roots):
            return
    where = ", ".join(str(r) for r in roots) or "none: the sweep names no code folder"
    raise UserError(f"{key}: {ref}: module {top} is not in the sweep's code folder ({where}) nor one of this "
                    f"tool's packages; a sweep file names code only from those, or from installed packages it "
                    f"lists (packages: [{top}])")


def resolve(ref: str, key: str) -> Callable[..., Any]:
    """Import `module:name` and return the callable; any failure is one line naming `key` and `ref`."""
    check_ref(ref, key)
    module_name, _, attr = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and (module_name == err.name or module_name.startswith(err.name + ".")):
            raise UserError(f"{key}: {ref}: no module named {err.name!r} (looked in the sweep file's folder, "
                            "its `code:` folder and the installed packages)") from None
        raise UserError(f"{key}: {ref}: importing {module_name} failed: {_line(err)}") from None
    except Exception as err:  # the user's module raised while it was imported
        raise UserError(f"{key}: {ref}: importing {module_name} failed: {_line(err)}") from None
    try:
        target = getattr(module, attr)
    except AttributeError:
        raise UserError(f"{key}: {ref}: module {module_name} has no attribute {attr!r}") from None
    if not callable(target):
        raise UserError(f"{key}: {ref}: is a {type(target).__name__}, not a callable")
    return target


def parameters(fn: Callable[..., Any]) -> tuple[set[str], set[str], bool]:
    """(every keyword it accepts, those without a default, whether it takes **kwargs)."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return set(), set(), True  # a builtin without a signature: accept what is given
    named, required, open_ended = set(), set(), False
    for p in signature.parameters.values():
        if p.kind is p.VAR_KEYWORD:
            open_ended = True
        elif p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            named.add(p.name)
            if p.default is p.empty:
                required.add(p.name)
    return named, required, open_ended


def call_with(fn: Callable[..., Any], values: dict[str, Any]) -> Any:
    """Call `fn` with the values its signature names (all of them when it takes **kwargs)."""
    named, _, open_ended = parameters(fn)
    return fn(**(values if open_ended else {k: v for k, v in values.items() if k in named}))


def _line(err: BaseException) -> str:
    text = " ".join(str(err).split())[:300]
    return f"{type(err).__name__}: {text}" if text else type(err).__name__
