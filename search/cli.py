"""The `tune` command line: our commands plus Ray Tune's own (`ls`, `lsx`, ...).

Heavy libraries (Ray, PyTorch, MLflow) are imported inside the commands, so a bad
sweep file is reported in well under a second and Ray is never started for it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import click

from core.errors import UserError
from search.commands.options import drop_tensorboard_logger, quiet_mlflow_http_retries, quiet_tune_duplicates
from search.settings import Environment, RunOptions, load_run_config

RAY_COMMANDS = ("ls", "list-trials", "lsx", "list-experiments", "add-note")


class TuneGroup(click.Group):
    """Our commands, with Ray Tune's CLI commands loaded only when one is asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*super().list_commands(ctx), *RAY_COMMANDS]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in RAY_COMMANDS:
            from ray.tune.cli.scripts import cli as ray_cli

            return ray_cli.get_command(ctx, name)
        return super().get_command(ctx, name)


@click.group(cls=TuneGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
def cli(debug: bool) -> None:
    """Hyperparameter sweeps of the seed CNN: Optuna + ASHA on Ray Tune, tracked in MLflow."""
    # `--debug` is acted on in main(), which sees the error after click has returned.
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)


FLAG_KEYS = {"epochs": "epochs", "subset": "data.subset", "seed": "space.seed", "data_dir": "data.dir",
             "num_samples": "search.num_samples", "storage": "storage"}


def flag_values(overrides: Sequence[str], **flags: object) -> dict[str, Any]:
    """The shortcut flags as typed values by sweep key; a key also given with `--set` is an error."""
    values = {}
    for flag, value in flags.items():
        if value is None:
            continue
        key = FLAG_KEYS[flag]
        clash = [o for o in overrides if o.partition("=")[0].strip() in (key, key.split(".")[-1])]
        if clash:
            raise UserError(f"--{flag.replace('_', '-')} and --set {clash[0]} both set {key}; give one")
        values[key] = value
    return values


@contextlib.contextmanager
def stdout_to_stderr(active: bool) -> Iterator[None]:
    """While active, everything written to stdout (Ray's tables included, at the descriptor
    level, so child processes too) goes to stderr; stdout is left for one JSON document."""
    if not active:
        yield
        return
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def prepare_tracking() -> None:
    """Process-wide settings of the libraries a sweep uses, set once before one starts."""
    quiet_mlflow_http_retries()
    drop_tensorboard_logger()
    quiet_tune_duplicates()


SET_HELP = "Override a sweep key, e.g. --set lr=0.01 or --set search.num_samples=4 (repeatable)."


@cli.command()
@click.argument("sweep", required=False)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option("--epochs", type=click.IntRange(min=1), help="Epochs to train.")
@click.option("--subset", type=click.IntRange(min=100), help="Use this many training images.")
@click.option("--seed", type=click.IntRange(min=0), help="Seed for weights and shuffling.")
@click.option("--data-dir", type=click.Path(), help="Directory with the IDX files.")
@click.option("--threads", type=click.IntRange(min=1), help="PyTorch threads (default: all cores).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with config and metrics.")
def train(sweep: str | None, overrides: tuple[str, ...], epochs: int | None, subset: int | None,
          seed: int | None, data_dir: str | None, threads: int | None, as_json: bool) -> None:
    """Train one configuration in this process (no Ray): SWEEP's fixed values over the defaults."""
    from spaces import apply_override, load_sweep, set_value, validate_sweep

    values = flag_values(overrides, epochs=epochs, subset=subset, seed=seed, data_dir=data_dir)
    if sweep is None:
        document: dict = {"name": "train"}
        for change in overrides:
            apply_override(document, change)
        for key, value in values.items():
            set_value(document, key, value)
        config = validate_sweep(document)
    else:
        config = load_sweep(sweep, overrides, values=values)
    from search.commands.train import train_locally

    result = train_locally(config, threads=threads, quiet=as_json)
    if as_json:
        click.echo(json.dumps(result, indent=2))


@cli.command()
@click.argument("sweep")
@click.option("--address", help="Ray cluster to use: auto, HOST:PORT or ray://… (default: RAY_ADDRESS, "
              "else a local Ray).")
@click.option("--name", "run_name", help="Name of this run (default: <sweep>-<UTC time>).")
@click.option("--storage", help="Where results go: a folder or s3://… (default: SWEEP_STORAGE, else the "
              "sweep's `storage`, else ./runs).")
@click.option("--tracking-uri", help="MLflow tracking URI, e.g. http://host:5000 (default: the sweep's "
              "mlflow.tracking_uri, else MLFLOW_TRACKING_URI, else SQLite in the storage folder).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option("--num-samples", type=click.IntRange(min=1), help="Trials to sample.")
@click.option("--resume", is_flag=True, help="Continue the interrupted run --name (default: the latest).")
@click.option("--dry-run", is_flag=True, help="Validate and show the plan; start nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print results.json (with --dry-run: the plan) as the only "
              "output on stdout; everything else goes to stderr.")
@click.option("--dashboard-host", help="Address the local Ray dashboard listens on (default: 127.0.0.1).")
@click.option("--warm-start", "warm_start", metavar="RUN", help="Seed the Optuna study with the finished trials of "
              "an earlier run on the same space (its name, folder or URI).")
def run(sweep: str, address: str | None, run_name: str | None, storage: str | None, tracking_uri: str | None,
        overrides: tuple[str, ...], num_samples: int | None, resume: bool, dry_run: bool, as_json: bool,
        dashboard_host: str | None, warm_start: str | None) -> None:
    """Search SWEEP (a file, or the name of one in spaces/) with Optuna + ASHA on Ray Tune."""
    if resume and (overrides or num_samples):
        raise UserError("--resume continues a sweep as it was started; it takes no --set or --num-samples")
    if resume and dry_run:
        raise UserError("--resume and --dry-run exclude each other")
    if resume and warm_start:
        raise UserError("--resume continues a sweep's own study; it takes no --warm-start")
    if run_name is not None:
        from spaces import check_name

        check_name(run_name, "--name")
    env = Environment.read()
    config = load_run_config(sweep, overrides, flag_values(overrides, num_samples=num_samples, storage=storage),
                             env)
    options = RunOptions(address=address, run_name=run_name, resume=resume, dry_run=dry_run, as_json=as_json,
                         dashboard_host=dashboard_host, tracking_uri=tracking_uri, env=env,
                         warm_start=warm_start)
    from search.commands.run import run_sweep

    run_and_exit(lambda: run_sweep(config, options), as_json)


def run_and_exit(start: Callable[[], Any], as_json: bool) -> None:
    """Run a sweep (`start` returns its `SweepOutcome`) with the libraries set up; with `--json` its
    payload is the only output on stdout; exit with its code."""
    prepare_tracking()
    with stdout_to_stderr(as_json):
        outcome = start()
    if as_json:
        click.echo(json.dumps(outcome.payload, indent=2, default=str))
    sys.exit(outcome.exit_code)


@cli.command()
@click.argument("source")
@click.option("--factors", required=True, help="Space keys to vary, comma-separated, e.g. batch_norm,skip.")
@click.option("--seeds", type=int, default=5, show_default=True, help="Seeds per combination (5 or more: a t-test).")
@click.option("--epochs", type=int, help="Epochs per training run (default: the source's).")
@click.option("--levels", "level_specs", multiple=True, metavar="KEY=A,B",
              help="Levels of a numeric factor, e.g. --levels lr=1e-3,3e-3 (repeatable).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option("--sweep", "code_from", metavar="FILE", help="The sweep file whose code (model:, trainable:, "
              "data.dataset:, code:) ablates a run of a sweep with its own code (a run folder never names code).")
@click.option("--name", "run_name", help="Name of this run (default: <sweep>-ablate-<UTC time>).")
@click.option("--storage", help="Where results go, and where a run named by SOURCE is looked up (default: "
              "SWEEP_STORAGE, else ./runs).")
@click.option("--tracking-uri", help="MLflow tracking URI (default as for `tune run`).")
@click.option("--address", help="Ray cluster to use (default: RAY_ADDRESS, else a local Ray).")
@click.option("--resume", is_flag=True, help="Continue the interrupted ablation --name (default: the latest).")
@click.option("--dry-run", is_flag=True, help="Validate and show the plan; start nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print results.json (with the effects) as the only output "
              "on stdout.")
@click.option("--dashboard-host", help="Address the local Ray dashboard listens on (default: 127.0.0.1).")
def ablate(source: str, factors: str, seeds: int, epochs: int | None, level_specs: tuple[str, ...],
           overrides: tuple[str, ...], code_from: str | None, run_name: str | None, storage: str | None,
           tracking_uri: str | None, address: str | None, resume: bool, dry_run: bool, as_json: bool,
           dashboard_host: str | None) -> None:
    """Train every combination of some factors' levels × seeds, the rest fixed at SOURCE's best
    configuration (a finished run: its name, folder or URI) or at a sweep file's fixed values; report
    each factor's effect with a 95% confidence interval."""
    if resume and dry_run:
        raise UserError("--resume and --dry-run exclude each other")
    if epochs is not None and epochs < 1:
        raise UserError(f"--epochs {epochs}: must be at least 1")
    if run_name is not None:
        from spaces import check_name

        check_name(run_name, "--name")
    env = Environment.read()
    from search.commands.ablate import parse_levels, plan_ablation, run_ablation

    lookup = storage or env.storage or "runs"
    plan = plan_ablation(source, [f.strip() for f in factors.split(",") if f.strip()], seeds, epochs=epochs,
                         levels=parse_levels(level_specs), overrides=overrides, storage=lookup,
                         code_from=code_from)
    if storage or env.storage:
        plan = plan.with_storage(storage or env.storage)
    options = RunOptions(address=address, run_name=run_name, resume=resume, dry_run=dry_run, as_json=as_json,
                         dashboard_host=dashboard_host, tracking_uri=tracking_uri, env=env)
    run_and_exit(lambda: run_ablation(plan, options), as_json)


@cli.command()
@click.argument("sweep")
@click.option("--cron", required=True, help='When to run: 5 cron fields ("0 2 * * *"), or 6 with seconds '
              'first ("0 */30 * * * *": every half hour, at second 0); at most once a minute.')
@click.option("--timezone", "tz", default="UTC", show_default=True, help="Time zone of the cron fields.")
@click.option("--max-runs", type=click.IntRange(min=1), help="Stop after this many sweeps.")
@click.option("--catch-up", is_flag=True, help="After downtime, run the latest missed tick (never more).")
@click.option("--once", is_flag=True, help="Run the latest due tick and exit (for cron or a CronJob); "
              "a tick that already ran is not run again.")
@click.option("--address", help="Ray cluster to use (default: RAY_ADDRESS, else a local Ray).")
@click.option("--storage", help="Where results go (default: SWEEP_STORAGE, else the sweep's `storage`, else ./runs).")
@click.option("--tracking-uri", help="MLflow tracking URI (default as for `tune run`).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
def schedule(sweep: str, cron: str, tz: str, max_runs: int | None, catch_up: bool, once: bool,
             address: str | None, storage: str | None, tracking_uri: str | None, overrides: tuple[str, ...]) -> None:
    """Run SWEEP at every cron tick, one Optuna study across ticks, `champion` moved only when beaten."""
    from search.commands.schedule import ScheduleOptions, parse_cron

    env = Environment.read()
    parse_cron(cron, tz, env.min_tick_interval_s)  # a bad expression is a one-line error before anything starts
    if once and (max_runs or catch_up):
        raise UserError("--once runs one tick; it takes no --max-runs or --catch-up")
    config = load_run_config(sweep, overrides, flag_values(overrides, storage=storage), env)
    prepare_tracking()
    from search.commands.schedule import run_schedule

    options = ScheduleOptions(cron=cron, timezone=tz, max_runs=max_runs, catch_up=catch_up, once=once,
                              run=RunOptions(address=address, tracking_uri=tracking_uri,
                                             env=env))
    sys.exit(run_schedule(config, options))


@cli.command()
@click.argument("images", nargs=-1, required=True)
@click.option("--model", "model_uri", default="models:/quick@best", show_default=True,
              help="The registered model: models:/NAME@ALIAS or models:/NAME/VERSION.")
@click.option("--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else the SQLite store in "
              "--storage).")
@click.option("--storage", help="The storage whose MLflow store holds the model (default: SWEEP_STORAGE, else "
              "./runs).")
@click.option("--json", "as_json", is_flag=True, help="Print the predictions as one JSON document.")
def predict(images: tuple[str, ...], model_uri: str, tracking_uri: str | None, storage: str | None,
            as_json: bool) -> None:
    """Classify IMAGES (PNG, JPEG, …; a digit, dark on light or light on dark) with a registered model."""
    from pathlib import Path

    from search.commands.predict import predict as run_predict
    from search.commands.predict import print_predictions
    from search.engine.storage import is_uri, resolve_storage
    from search.settings import default_tracking_uri, resolve_tracking_uri

    env = Environment.read()
    root = storage or env.storage or "runs"
    if not (tracking_uri or env.tracking_uri) and is_uri(root):
        raise UserError(f"--storage {root}: the default MLflow store is a local file; name the store with "
                        "--tracking-uri or MLFLOW_TRACKING_URI")
    uri = resolve_tracking_uri(tracking_uri, env, None, default_tracking_uri(Path(resolve_storage(root))))
    quiet_mlflow_http_retries()
    results = run_predict(list(images), model_uri, uri)
    if as_json:
        click.echo(json.dumps(results, indent=2))
    else:
        print_predictions(results)
    if any(r["class"] is None for r in results):
        sys.exit(2)  # each image that was not classified has its line above


@cli.command("sync-mlflow")
@click.argument("experiment_dir")
@click.option("--tracking-uri", help="Store to replay into (default: the store the run was started with).")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=1), default=600, show_default=True,
              help="Seconds to keep retrying an unreachable store.")
def sync_mlflow(experiment_dir: str, tracking_uri: str | None, timeout_s: float) -> None:
    """Replay a sweep run from Tune storage into MLflow, adding only what is missing."""
    prepare_tracking()
    from search.commands.sync import report_line, sync_run

    click.echo(report_line(sync_run(experiment_dir, tracking_uri, Environment.read(), timeout_s)))


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of `tune` and `python -m search`: user errors are one line and exit 2."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        cli.main(args=argv, prog_name="tune", standalone_mode=False)
    except UserError as err:
        if debug:
            traceback.print_exc()
        click.echo(f"tune: error: {err}", err=True)
        sys.exit(err.exit_code)
    except click.exceptions.Abort:
        click.echo("tune: aborted", err=True)
        sys.exit(130)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except click.exceptions.Exit as err:
        sys.exit(err.exit_code)
