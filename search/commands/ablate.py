"""`tune ablate`: every combination of some factors' levels × seeds, everything else fixed at a
finished run's best configuration (or a sweep file's fixed values), trained to the full budget as
one grid sweep (so resume, Ctrl-C, MLflow and clusters behave as for `tune run`), then each
factor's effect paired by seed with a 95% interval (`search.effects`)."""

from __future__ import annotations

import copy
import json
import logging
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from core.entrypoints import is_ref
from core.errors import UserError
from core.urls import is_redacted
from search.commands.run import EXIT_OK, SweepOutcome, run_sweep
from search.effects import ablation_effects, effects_table, forest_plot
from search.engine.storage import RESULTS_FILE, SWEEP_FILE, ExperimentDir, find_run
from search.settings import RunOptions
from spaces import Choice, Grid, SweepConfig, apply_override, check_entry_points, load_sweep, validate_sweep

log = logging.getLogger(__name__)

SEED_KEY = "seed"
ABLATION_TAG = "ablation"
SOURCE_TAG = "ablation_source"


@dataclass(frozen=True)
class AblationPlan:
    """The grid sweep an ablation runs, and what it is about."""

    config: SweepConfig
    factors: dict[str, list[Any]]
    seeds: int
    source: str  # the run folder or sweep file the fixed values came from

    def with_storage(self, storage: str) -> AblationPlan:
        """The same ablation writing to `storage` (the flag or SWEEP_STORAGE, over the source's)."""
        return replace(self, config=self.config.model_copy(update={"storage": storage}))


def parse_levels(specs: Sequence[str]) -> dict[str, list[Any]]:
    """`--levels lr=1e-3,3e-3` -> {"lr": [0.001, 0.003]} (each value read as YAML)."""
    import yaml

    levels: dict[str, list[Any]] = {}
    for spec in specs:
        key, sep, raw = spec.partition("=")
        if not sep or not key.strip() or not raw.strip():
            raise UserError(f"--levels {spec}: must be KEY=A,B, e.g. --levels lr=1e-3,3e-3")
        try:
            levels[key.strip()] = [yaml.safe_load(v) for v in raw.split(",")]
        except yaml.YAMLError:
            raise UserError(f"--levels {spec}: values must be plain numbers or words") from None
    return levels


def plan_ablation(source: str, factors: Sequence[str], seeds: int, *, epochs: int | None = None,
                  levels: Mapping[str, list[Any]] | None = None, overrides: Sequence[str] = (),
                  storage: str = "runs", code_from: str | None = None) -> AblationPlan:
    """The ablation sweep of `source`: a finished run (its folder, a URI, or its name in `storage`),
    whose best configuration fixes every other key, or a sweep file, whose fixed values do.

    A run folder is data: its scores and configuration are used, never the code, server or store it
    names. A run of a sweep with its own code is ablated with the callables of the sweep file the
    user names (`code_from`, `--sweep FILE`)."""
    if seeds < 1:
        raise UserError(f"--seeds {seeds}: must be at least 1 (5 or more give a t-test)")
    if not factors:
        raise UserError("--factors: name at least one space key, e.g. --factors batch_norm,skip")
    levels = dict(levels or {})
    if unknown := [k for k in levels if k not in factors]:
        raise UserError(f"--levels {unknown[0]}: not one of --factors ({', '.join(factors)})")
    run = _finished_run(source, storage)
    if run is None and code_from is not None:
        raise UserError(f"--sweep {code_from}: names the code of a run's ablation; {source} is a sweep file already")
    if run is not None:
        base, fixed, where = run
        base, code_source = _run_document(base, where, code_from, storage)
        source_config = validate_sweep(base, code_source)
    else:
        source_config = _sweep_file(source, overrides, storage)
        base, where = source_config.document(), str(source_config.source)
        fixed = {k: v for k, v in source_config.space_entries().items() if k not in source_config.searched()}
    chosen = {factor: _levels(source_config, factor, levels.get(factor)) for factor in factors}
    if run is None and (searched := [k for k in source_config.searched() if k not in factors and k != SEED_KEY]):
        raise UserError(f"space.{searched[0]} is searched by {source_config.name}: fix it (--set "
                        f"{searched[0]}=VALUE) or make it a factor; an ablation varies only its factors and seeds")
    document = _ablation_document(base, fixed, chosen, seeds, epochs)
    tracking_uri = source_config.mlflow.tracking_uri  # a sweep file's (a run folder's is dropped)
    document["mlflow"] = {"tracking_uri": None if is_redacted(tracking_uri) else tracking_uri}
    for override in overrides if run is not None else ():  # a sweep file had them applied already
        apply_override(document, override)
    config = validate_sweep(document, source_config.source)
    check_entry_points(config)  # a run's own model or trainable: imported here, as `tune run` does
    return AblationPlan(config, chosen, seeds, where)


def _finished_run(source: str, storage: str) -> tuple[dict, dict, str] | None:
    """(its sweep document, its best configuration, its location) when `source` is a run."""
    experiment = find_run(source, storage)
    if experiment is None:
        return None
    saved = experiment.read_json(SWEEP_FILE)
    if saved is None:
        raise UserError(f"{experiment.uri}: not a sweep run folder (it holds no {SWEEP_FILE})")
    results = experiment.read_json(RESULTS_FILE) or {}
    if results.get("status") != "finished" or not results.get("best"):
        raise UserError(f"{experiment.uri}: the run has not finished with a best trial (finish it with "
                        "tune run --resume first)")
    return saved, dict(results["best"]["config"]), experiment.uri


CODE_KEYS = ("model", "trainable", "code")


def _run_document(saved: Mapping[str, Any], where: str, code_from: str | None, storage: str
                  ) -> tuple[dict[str, Any], Path | None]:
    """A finished run's sweep document as data: without the file, store and tracking server it names
    (the ablation writes to `storage`, tracks where flags and environment say), and with the code of
    the user's sweep file `code_from` in place of the code it names. Returns it and that file."""
    document = {k: copy.deepcopy(v) for k, v in saved.items() if k not in ("source", "mlflow", *CODE_KEYS)}
    document["storage"] = storage
    data = document.get("data") if isinstance(document.get("data"), dict) else {}
    named = {k: saved[k] for k in CODE_KEYS if saved.get(k)}
    if isinstance(data.get("dataset"), str) and is_ref(data["dataset"]):
        named["data.dataset"] = data.pop("dataset")
    if code_from is None:
        if named:
            key, value = next(iter(named.items()))
            raise UserError(f"{where}: its sweep names code ({key}: {value}); a run folder never chooses code: "
                            "name the sweep file that holds it with --sweep FILE")
        return document, None
    code = load_sweep(code_from)
    document.update({k: getattr(code, k) for k in CODE_KEYS if getattr(code, k) is not None})
    if code.data.is_custom:
        document.setdefault("data", {})["dataset"] = code.data.dataset
    return document, code.source


def _sweep_file(source: str, overrides: Sequence[str], storage: str) -> SweepConfig:
    if "/" in source and not source.endswith((".yaml", ".yml")) and not Path(source).exists():
        raise UserError(f"{source}: no such run folder or sweep file")
    try:
        return load_sweep(source, overrides)
    except UserError as err:
        if "no such sweep file" in str(err):
            raise UserError(f"{source}: neither a finished run in {storage} nor a sweep file ({err})") from None
        raise


def _levels(config: SweepConfig, factor: str, given: list[Any] | None) -> list[Any]:
    """A factor's levels: as given, else both booleans, else the values the sweep lists for it."""
    entries = config.space_entries()
    if factor == SEED_KEY or factor not in {*entries, *config.space.extra_keys()}:
        keys = ", ".join(k for k in entries if k != SEED_KEY)
        raise UserError(f"--factors {factor}: not a key of {config.name}'s space (keys: {keys})")
    value = entries[factor]
    if given is None:
        if isinstance(value, bool) or (isinstance(value, (Choice, Grid)) and
                                       all(isinstance(v, bool) for v in value.values())):
            given = [False, True]  # an effect reads as "on − off"
        elif isinstance(value, (Choice, Grid)):
            given = list(dict.fromkeys(value.values()))
        else:
            raise UserError(f"--factors {factor}: a numeric key has no levels of its own; give them with "
                            f"--levels {factor}=A,B")
    if len(given) < 2:
        raise UserError(f"--factors {factor}: has one level ({given[0]!r}); a factor needs at least two")
    return given


def _ablation_document(base: Mapping[str, Any], fixed: Mapping[str, Any], factors: Mapping[str, list[Any]],
                       seeds: int, epochs: int | None) -> dict[str, Any]:
    document = copy.deepcopy({k: v for k, v in base.items() if k != "source"})
    space = {k: _plain(v) for k, v in fixed.items() if k != SEED_KEY}
    space.update({factor: {"grid": list(values)} for factor, values in factors.items()})
    space[SEED_KEY] = {"grid": list(range(seeds))}
    document.update({
        "name": f"{base['name'][:93]}-ablate",
        "description": f"Ablation of {', '.join(factors)} × {seeds} seeds",
        "space": space,
        "search": {"algorithm": "grid", "num_samples": 1},
        "scheduler": {"type": "fifo"},
        "epochs": epochs or base.get("epochs", 10),
    })
    return document


def _plain(value: Any) -> Any:
    return value.model_dump(mode="json") if hasattr(value, "model_dump") else value


def ablation_plan_text(plan: AblationPlan) -> str:
    runs = plan.config.trial_count()
    factors = "; ".join(f"{k}: {', '.join(map(repr, v))}" for k, v in plan.factors.items())
    return (f"ablation of {plan.source}: {factors}; seeds 0..{plan.seeds - 1}\n"
            f"{runs} training runs × {plan.config.epochs} epochs, no early stopping; "
            f"everything else fixed: {plan.config.trial_config()}")


def run_ablation(plan: AblationPlan, options: RunOptions) -> SweepOutcome:
    """Run the ablation's grid like any sweep, then its effects: printed, in results.json, in MLflow."""
    options = replace(options, evaluate_all=True,
                      tags={**options.tags, ABLATION_TAG: ",".join(plan.factors), SOURCE_TAG: plan.source})
    if options.dry_run:
        print(ablation_plan_text(plan), file=sys.stderr)
    outcome = run_sweep(plan.config, options)
    payload = outcome.payload
    if options.dry_run or outcome.exit_code != EXIT_OK or payload.get("status") != "finished":
        return outcome
    rows = ablation_effects(payload["trials"], plan.factors)
    payload["ablation_effects"] = {"factors": plan.factors, "seeds": plan.seeds, "source": plan.source,
                                   "effects": rows}
    ExperimentDir(payload["storage"].rpartition("/")[0], payload["run_name"]).write_json(RESULTS_FILE, payload)
    print(f"\neffects ({plan.seeds} seeds, paired by seed; the difference of the later level minus the first):",
          file=sys.stderr)
    print(effects_table(rows), file=sys.stderr)
    _log_effects(payload, rows)
    return outcome


def _log_effects(payload: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """The effect table and the forest plot, as artifacts of the ablation's parent run."""
    mlflow_info = payload.get("mlflow") or {}
    if not mlflow_info.get("parent_run_id"):
        return
    from mlflow.tracking import MlflowClient

    try:
        client = MlflowClient(mlflow_info["tracking_uri"])
        with tempfile.TemporaryDirectory() as staging:
            folder = Path(staging)
            (folder / "effects.json").write_text(json.dumps(rows, indent=2))
            (folder / "effects.txt").write_text(effects_table(rows, metrics=[r["metric"] for r in rows]) + "\n")
            for metric in ("test_acc", "val_acc"):
                forest_plot(rows, str(folder / f"forest_{metric}.png"), metric)
            client.log_artifacts(mlflow_info["parent_run_id"], str(folder), "ablation")
    except Exception as err:  # the effects are safe in results.json
        log.warning("mlflow: could not log the effect table (%s: %s); it is in %s", type(err).__name__,
                    " ".join(str(err).split())[:200], RESULTS_FILE)
