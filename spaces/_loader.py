"""Read a sweep file safely, apply `--set` overrides, validate into a `SweepConfig`."""

from __future__ import annotations

import stat
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from core.errors import UserError
from spaces._schema import SweepConfig

SPACES_DIR = Path(__file__).resolve().parent
MAX_FILE_BYTES = 1 << 20
RANGE_KINDS = ("uniform", "loguniform", "int")
SHORTHAND_SECTION = "space"  # `--set lr=0.01` means `--set space.lr=0.01`


class _NoAliasLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that refuses aliases, so an alias bomb cannot expand."""

    def compose_node(self, parent, index):  # type: ignore[no-untyped-def]
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.MarkedYAMLError(
                problem="YAML aliases (*name) are not allowed in sweep files",
                problem_mark=event.start_mark,
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):  # type: ignore[no-untyped-def]
        """A key given twice is refused (YAML would keep the last one silently)."""
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.MarkedYAMLError(problem=f"duplicate key {key!r}", problem_mark=key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def available_sweeps() -> list[str]:
    """Names of the sweep files shipped in `spaces/`."""
    return sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))


def resolve_sweep_path(sweep: str) -> Path:
    """A path as given, or the name of a file shipped in `spaces/` (`quick` -> spaces/quick.yaml)."""
    path = Path(sweep)
    if path.exists() or path.suffix in (".yaml", ".yml") or "/" in sweep:
        return path
    return SPACES_DIR / f"{sweep}.yaml"


def read_sweep_document(path: Path) -> dict[str, Any]:
    """The YAML mapping in `path`, or a `UserError` naming the file and what is wrong."""
    if path.is_dir():
        raise UserError(f"{path}: is a directory, but must be a sweep file (.yaml)")
    if not path.exists():
        known = ", ".join(available_sweeps())
        raise UserError(f"{path}: no such sweep file (shipped sweeps: {known})")
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):  # a FIFO or a device would block or never end
            raise UserError(f"{path}: is not a regular file, but must be a sweep file (.yaml)")
        if info.st_size > MAX_FILE_BYTES:
            raise UserError(f"{path}: is {info.st_size} bytes, but sweep files must be <= {MAX_FILE_BYTES}")
        with path.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)  # a file that grows after the check is still bounded
        if len(data) > MAX_FILE_BYTES:
            raise UserError(f"{path}: grew past {MAX_FILE_BYTES} bytes while being read; sweep files must be "
                            "smaller")
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        byte = err.object[err.start]
        raise UserError(f"{path}: is not UTF-8 text (byte 0x{byte:02x} at offset {err.start})") from None
    except OSError as err:
        raise UserError(f"{path}: cannot read: {err.strerror}") from None
    try:
        document = _parse_yaml(text)
    except ValueError as err:
        raise UserError(f"{path}: {err}") from None
    if document is None:
        raise UserError(f"{path}: is empty, but must hold a sweep (at least `epochs` or `space`)")
    if not isinstance(document, dict):
        raise UserError(f"{path}: holds a {type(document).__name__}, but must hold a mapping of keys")
    return document


def _parse_yaml(text: str) -> Any:
    """Safe-load YAML without aliases; any problem, deep nesting included, is a ValueError saying where."""
    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        raise ValueError(_yaml_problem(err)) from None
    except RecursionError:
        raise ValueError("nested too deeply to be a sweep") from None


def _yaml_problem(err: yaml.YAMLError) -> str:
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    problem = " ".join(str(problem).split())
    if mark is not None:
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    return problem


def load_sweep(
    sweep: str | Path,
    overrides: Iterable[str] = (),
    *,
    values: Mapping[str, Any] | None = None,
    name: str | None = None,
) -> SweepConfig:
    """Read, override and validate a sweep file; the single entry point to `SweepConfig`.

    `overrides` are `--set KEY=VALUE` strings (values parsed as YAML); `values` are typed
    values by key (the CLI's shortcut flags), applied after them.
    """
    path = resolve_sweep_path(str(sweep))
    document = read_sweep_document(path)
    document.setdefault("name", path.stem)
    for override in overrides:
        apply_override(document, override)
    for key, value in (values or {}).items():
        set_value(document, key, value)
    if name is not None:
        document["name"] = name
    config = validate_sweep(document, path)
    from spaces._entry import check_entry_points

    check_entry_points(config)
    return config


def validate_sweep(document: Mapping[str, Any], source: Path | None = None) -> SweepConfig:
    """Validate a parsed document; errors name the file and the key path."""
    where = str(source) if source else "--set"
    try:
        config = SweepConfig.model_validate({**document, "source": source})
    except ValidationError as err:
        raise UserError(f"{where}: {format_validation_error(err)}") from None
    return config


def format_validation_error(err: ValidationError) -> str:
    """The first error of `err` as `key.path: what is wrong, found X` (+ how many more)."""
    errors = err.errors(include_url=False)
    first = errors[0]
    loc = _location(first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        known = allowed_keys(first["loc"][:-1])
        message = f"unknown key; expected one of: {', '.join(known)}" if known else "unknown key"
    elif not isinstance(first.get("input"), (dict, list)) and first["type"] not in ("value_error", "missing"):
        message = f"{message}, found {first['input']!r}"
    more = f" (and {len(errors) - 1} more problem{'s' * (len(errors) > 2)})" if len(errors) > 1 else ""
    return f"{loc}: {message}{more}" if loc else f"{message}{more}"


def _location(loc: tuple) -> str:
    parts: list[str] = []
    for part in loc:
        part = str(part)
        if part in ("fixed",) or (parts and parts[-1] == part):
            continue  # union tags repeat the key they select
        if part == "bounds":
            part = "int"
        if parts and parts[-1] in RANGE_KINDS and part in ("0", "1"):
            part = ("low", "high")[int(part)]
        parts.append(part)
    return ".".join(parts)


def allowed_keys(loc: Iterable[Any]) -> list[str]:
    """The keys accepted at a key path of the sweep file."""
    model: type[BaseModel] = SweepConfig
    for part in loc:
        field = model.model_fields.get(str(part))
        section = field.annotation if field is not None else None
        if not (isinstance(section, type) and issubclass(section, BaseModel)):
            return []
        model = field.annotation
    return [k for k in model.model_fields if k != "source"]


def apply_override(document: dict[str, Any], override: str) -> None:
    """Apply one `--set key.path=value` override in place; the value is parsed as YAML."""
    key, sep, raw = override.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UserError(f"--set {override}: must be KEY=VALUE, e.g. --set lr=0.01")
    path = key_path(key, open_space=bool(document.get("model")))
    try:
        value = _parse_yaml(raw)
    except ValueError as err:
        raise UserError(f"--set {key}: value {raw[:50]!r} is not valid YAML ({err})") from None
    _set(document, path, value)


def set_value(document: dict[str, Any], key: str, value: Any) -> None:
    """Set `key.path` to a typed value in place (a flag's value: no YAML round trip)."""
    _set(document, key_path(key, open_space=bool(document.get("model"))), value)


def key_path(key: str, open_space: bool = False) -> list[str]:
    """`lr` -> [space, lr], `search.num_samples` -> [search, num_samples]; unknown keys are refused,
    except space keys of a sweep with a `model:` callable (`open_space`: its signature decides)."""
    path = key.split(".")
    if open_space and ((len(path) == 1 and path[0] not in allowed_keys(()) and path[0].isidentifier())
                       or (len(path) == 2 and path[0] == SHORTHAND_SECTION)):
        return [SHORTHAND_SECTION, path[-1]]
    if len(path) == 1 and path[0] not in allowed_keys(()):
        if path[0] not in allowed_keys([SHORTHAND_SECTION]):
            raise UserError(
                f"--set {key}: unknown key; expected a top-level key "
                f"({', '.join(allowed_keys(()))}) or a space key "
                f"({', '.join(allowed_keys([SHORTHAND_SECTION]))}), or a dotted path like search.num_samples"
            )
        path = [SHORTHAND_SECTION, *path]
    for depth in range(len(path)):
        if path[depth] not in allowed_keys(path[:depth]):
            where = ".".join(path[:depth]) or "the top level"
            known = ", ".join(allowed_keys(path[:depth])) or "none (not a section)"
            raise UserError(f"--set {key}: unknown key '{path[depth]}' in {where}; expected one of: {known}")
    return path


def _set(document: dict[str, Any], path: list[str], value: Any) -> None:
    node = document
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[path[-1]] = value
