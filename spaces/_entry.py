"""A sweep's own code (`model:`, `data.dataset:`, `trainable:`), resolved and checked when the file is loaded."""

from __future__ import annotations

from core.entrypoints import add_to_path, check_origin, parameters, resolve
from core.errors import UserError
from core.names import MODEL_SWITCHES
from spaces._schema import SweepConfig

MODEL_EXTRAS = ("num_classes",)  # what the tool passes to a model callable besides the space
DATA_ARGS = ("dir", "subset", "split_seed")  # what a data callable may take from the sweep's `data:`


def check_entry_points(config: SweepConfig) -> None:
    """Import the sweep's callables and check the model's signature against the space; each
    problem is one `UserError` naming the key. Their folder goes first on `sys.path`."""
    folders = config.code_folders()
    for folder in folders:
        if not folder.is_dir():
            raise UserError(f"code: {folder}: no such folder (it holds the modules that `model:` or "
                            "`data.dataset:` name; relative to the sweep file)")
    add_to_path(folders)
    for key, ref in config.code_refs().items():  # found where an import would find them; nothing imported yet
        check_origin(ref, key, folders, config.packages)
    if config.trainable:
        _check_trainable(config.trainable)
    if config.model:
        _check_model_signature(config)
    if config.data.is_custom:
        _, required, _ = parameters(resolve(config.data.dataset, "data.dataset"))
        if missing := sorted(required - set(DATA_ARGS)):
            raise UserError(f"data.dataset: {config.data.dataset} needs argument {missing[0]!r}, but a data "
                            f"callable gets only {', '.join(DATA_ARGS)} (from the sweep's `data:` section)")


def _check_trainable(ref: str) -> None:
    """A Ray Tune function trainable takes the trial's config as its one argument."""
    import inspect

    fn = resolve(ref, "trainable")
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    positional = [p for p in signature.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    takes_varargs = any(p.kind is p.VAR_POSITIONAL for p in signature.parameters.values())
    required = [p for p in positional if p.default is p.empty]
    if not (positional or takes_varargs) or len(required) > 1:
        raise UserError(f"trainable: {ref} takes ({', '.join(signature.parameters)}), but a Ray Tune function "
                        "trainable takes one argument, the trial's config dict")


def _check_model_signature(config: SweepConfig) -> None:
    ref = config.model
    named, required, open_ended = parameters(resolve(ref, "model"))
    entries = config.space_entries()
    own = [*config.space.extra_keys(), *(k for k in MODEL_SWITCHES if k in config.space.model_fields_set)]
    for key in own:
        if key not in named and not open_ended:
            takes = ", ".join(sorted(named)) or "no arguments"
            raise UserError(f"space.{key}: model {ref} takes no argument {key!r} (it takes: {takes})")
    available = {*entries, *MODEL_EXTRAS, "epochs"}
    if missing := sorted(required - available):
        raise UserError(f"model: {ref} needs argument {missing[0]!r}, which the sweep's space does not set "
                        f"(add space.{missing[0]})")
