"""The validated shape of a sweep file: `SweepConfig` and its sections."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.entrypoints import REF_PATTERN, REF_RULE, is_ref
from core.errors import UserError
from core.names import (
    AUGMENTS,
    DATASET_NAMES,
    LR_SCHEDULES,
    METRIC_MODES,
    MODEL_SWITCHES,
    OPTIMIZERS,
    OPTIONAL_LOOP_KEYS,
)
from core.urls import is_redacted, redact_uri
from spaces._distributions import is_distribution, open_spec, param_spec

BOOL_KINDS = ("choice", "grid")
FLOAT_KINDS = ("choice", "grid", "uniform", "loguniform")
INT_KINDS = ("choice", "grid", "int")
STR_KINDS = ("choice", "grid")
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
MAX_EXPERIMENT_CHARS = 500  # MLflow's limit on an experiment's name (mlflow.utils.validation)
NAME_RULE = "1-100 letters, digits, _ . or -, starting with a letter or digit"
MAX_TRIALS = 100_000  # grid combinations × num_samples; a larger sweep is a typo, not a plan
MAX_RUNGS = 32  # Ray's ASHA allocates a list per rung: a reduction_factor near 1 would never finish


def check_name(name: str, what: str) -> None:
    """A name that becomes a folder or part of an MLflow filter: no separators, quotes or `..` paths."""
    import re

    if not re.fullmatch(NAME_PATTERN, name):
        raise UserError(f"{what} {name!r}: not a valid name ({NAME_RULE})")

LearningRate = Annotated[float, Field(gt=0)]
L2 = Annotated[float, Field(ge=0)]
Dropout = Annotated[float, Field(ge=0, lt=1)]
BatchSize = Annotated[int, Field(ge=2, le=60000)]
Seed = Annotated[int, Field(ge=0)]
Optimizer = Literal[OPTIMIZERS]  # type: ignore[valid-type]
LrSchedule = Literal[LR_SCHEDULES]  # type: ignore[valid-type]
Augment = Literal[AUGMENTS]  # type: ignore[valid-type]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Space(_Section):
    """What to search: each key a fixed value or a distribution.

    Keys beyond the seed's are a `model:` callable's own arguments (checked against its
    signature when the file is loaded) or a `trainable:`'s config; without either they are refused.
    """

    model_config = ConfigDict(extra="allow", frozen=True, allow_inf_nan=False)
    __pydantic_extra__: dict[str, open_spec()]  # type: ignore[valid-type]

    batch_norm: param_spec(bool, BOOL_KINDS) = True
    skip: param_spec(bool, BOOL_KINDS) = True
    lr: param_spec(LearningRate, FLOAT_KINDS) = 1e-3
    l2: param_spec(L2, FLOAT_KINDS) = 0.0
    dropout: param_spec(Dropout, FLOAT_KINDS) = 0.0
    batch_size: param_spec(BatchSize, INT_KINDS) = 128
    seed: param_spec(Seed, INT_KINDS) = 0
    optimizer: param_spec(Optimizer, STR_KINDS) = "adam"
    lr_schedule: param_spec(LrSchedule, STR_KINDS) = "constant"
    augment: param_spec(Augment, STR_KINDS) = "none"

    def searched(self) -> dict[str, Any]:
        """The entries that are distributions, by key."""
        return {k: v for k, v in self.entries().items() if is_distribution(v)}

    def entries(self) -> dict[str, Any]:
        return {**{name: getattr(self, name) for name in type(self).model_fields}, **(self.model_extra or {})}

    def extra_keys(self) -> list[str]:
        """Keys the seed's space does not have (a custom model's arguments)."""
        return list(self.model_extra or {})


class Plateau(_Section):
    """Stop when the best score has not improved by more than `min_delta` over `patience` trials."""

    patience: int = Field(ge=1, le=100_000)
    min_delta: float = Field(0.0, ge=0)


class Stop(_Section):
    """When a sweep stops before its trial budget: on a plateau, or once a trial reaches `target`."""

    plateau: Plateau | None = None
    target: float | None = None


SECRET_URLS = (("search", "storage"), ("mlflow", "tracking_uri"))  # may carry a password


class Search(_Section):
    """How configurations are proposed."""

    algorithm: Literal["optuna", "random", "grid"] = "optuna"
    num_samples: int = Field(8, ge=1, le=100_000)
    max_concurrent_trials: int | None = Field(None, ge=1, le=10_000)
    seed: int = Field(0, ge=0)
    time_budget_s: float | None = Field(None, gt=0)
    storage: str | None = None
    study_name: str | None = Field(None, pattern=NAME_PATTERN)
    stop: Stop = Stop()
    start_from: list[dict[str, Any]] = Field(default_factory=list, max_length=1000)  # evaluated first

    @field_validator("storage")
    @classmethod
    def _check_storage(cls, value: str | None) -> str | None:
        """A journal file's path must not name a folder (Optuna would fail after Ray has started)."""
        if value is not None and "://" in value:
            import urllib.parse

            try:
                _ = urllib.parse.urlsplit(value.strip()).port  # a bad port or IPv6 literal: here, not in SQLAlchemy
            except ValueError as err:
                raise ValueError(f"not a database URL ({err})") from None
        if value is not None and "://" not in value and Path(value).is_dir():
            raise ValueError(f"{value} is a folder, but must be an Optuna journal file (e.g. {value}/study.log) "
                             "or a database URL")
        return value


class Scheduler(_Section):
    """Early stopping: ASHA at epoch rungs, or FIFO for none."""

    type: Literal["asha", "fifo"] = "asha"
    grace_period: int = Field(1, ge=1)
    reduction_factor: float = Field(2.0, gt=1)
    max_t: int | None = Field(None, ge=1)
    # ASHA: below this many results at a rung, only a trial better than all of them goes on (0: Ray's rule)
    min_peers: int = Field(0, ge=0, le=1000)


class Schedule(_Section):
    """How a scheduled sweep's model challenges the `champion` alias."""

    # paired: both models on the same validation examples, moved only when better beyond noise (a paired
    # t-test of per-example losses, McNemar's test for accuracy); any_better: when the summary is better at all
    promote: Literal["paired", "any_better"] = "paired"
    confidence: float = Field(0.95, ge=0.5, lt=1)


class Resources(_Section):
    """What one trial reserves on the cluster."""

    cpu: float = Field(1.0, gt=0, le=1024)
    gpu: float = Field(0.0, ge=0, le=64)

    @model_validator(mode="after")
    def _check_gpu_fraction(self) -> Resources:
        if self.gpu > 1 and not float(self.gpu).is_integer():
            raise ValueError(
                f"gpu is {self.gpu}, but a fraction of a GPU must be <= 1 "
                "(use a whole number for several GPUs)"
            )
        return self


class DataSection(_Section):
    """Which dataset, how much of it, and how it is split."""

    dataset: str = "mnist"  # a built-in name, or `package.module:callable` returning the splits
    subset: int | None = Field(None, ge=100, le=60000)
    split_seed: int = Field(0, ge=0)
    dir: str | None = None

    @field_validator("dataset")
    @classmethod
    def _check_dataset(cls, value: str) -> str:
        if is_ref(value):
            if not re.fullmatch(REF_PATTERN, value):
                raise ValueError(f"{value!r} is not a callable reference ({REF_RULE}, e.g. my_data.letters:load)")
        elif value not in DATASET_NAMES:
            raise ValueError(f"{value!r} is neither a built-in dataset ({', '.join(DATASET_NAMES)}) "
                             f"nor a callable reference ({REF_RULE})")
        return value

    @property
    def is_custom(self) -> bool:
        return is_ref(self.dataset)


class Mlflow(_Section):
    """Where results are tracked; defaults derive from the sweep name and storage."""

    tracking_uri: str | None = None
    experiment: str | None = Field(None, min_length=1, max_length=MAX_EXPERIMENT_CHARS)
    registered_model: str | None = Field(None, pattern=NAME_PATTERN)


class SweepConfig(_Section):
    """One validated sweep: the only object the rest of the tool reads configuration from."""

    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    model: str | None = None  # `package.module:callable` building the network; None: the seed network
    trainable: str | None = None  # `package.module:callable`: a Ray Tune function trainable, run as it is
    code: str | None = None  # folder of the user's modules, relative to the sweep file (default: its folder)
    # installed packages the callables may come from besides `code:` and the tool's own, e.g. [timm]
    packages: list[str] = Field(default_factory=list, max_length=50)
    metric: str = Field("val_loss", pattern=r"^[A-Za-z0-9_./-]{1,250}$")  # a `trainable:` may report any
    mode: Literal["min", "max"] | None = None
    epochs: int = Field(10, ge=1, le=10_000)
    space: Space = Space()
    search: Search = Search()
    scheduler: Scheduler = Scheduler()
    resources: Resources = Resources()
    data: DataSection = DataSection()
    storage: str = "runs"
    mlflow: Mlflow = Mlflow()
    schedule: Schedule = Schedule()
    source: Path | None = Field(None, exclude=True)

    @field_validator("packages")
    @classmethod
    def _check_packages(cls, value: list[str]) -> list[str]:
        for name in value:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,99}", name):
                raise ValueError(f"{name!r} is not a top-level package name (e.g. timm)")
        return value

    @field_validator("model", "trainable")
    @classmethod
    def _check_model(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(REF_PATTERN, value):
            raise ValueError(f"{value!r} is not a callable reference ({REF_RULE}, e.g. my_models.wide:build)")
        return value

    @model_validator(mode="after")
    def _resolve(self) -> SweepConfig:
        _check_own_code(self)
        _check_space_keys(self.space, self.model or self.trainable)
        expected = METRIC_MODES.get(self.metric) if self.trainable is None or self.mode is None else self.mode
        if expected is None and self.trainable is None:
            raise ValueError(f"metric: {self.metric!r} is not one of {', '.join(METRIC_MODES)} (a sweep with "
                             "its own `trainable:` may optimise any metric it reports)")
        if expected is None:
            raise ValueError(f"mode: required for metric {self.metric!r}, which your trainable reports: "
                             "min or max")
        if self.mode is not None and self.mode != expected:
            raise ValueError(f"mode is {self.mode}, but {self.metric} must be {expected}imised")
        object.__setattr__(self, "mode", expected)
        scheduler = self.scheduler
        if scheduler.max_t is None:
            scheduler = scheduler.model_copy(update={"max_t": self.epochs})
            object.__setattr__(self, "scheduler", scheduler)
        _check_scheduler(scheduler, self.epochs)
        _check_algorithm(self.search.algorithm, self.searched())
        _check_start_from(self.search.start_from, self.searched())
        if self.search.start_from and self.search.algorithm == "grid":
            raise ValueError("search.start_from: a grid runs every combination already; use it with optuna or random")
        if (trials := self.trial_count()) > MAX_TRIALS:
            raise ValueError(f"the sweep has {trials} trials (every grid combination × search.num_samples "
                             f"{self.search.num_samples}); at most {MAX_TRIALS}")
        return self

    def trial_count(self) -> int:
        """Trials the sweep will run: `num_samples` times every grid combination."""
        return self.search.num_samples * math.prod(
            d.grid_size() for d in self.searched().values()
        )

    def dump(self) -> dict[str, Any]:
        """The resolved sweep as JSON, with the password of any URL in it (an Optuna database, a
        tracking server) as `***`: what is printed, logged or saved. A resume takes the password
        from the sweep file it is given again (`with_secrets_of`)."""
        dumped = self.model_dump(mode="json")
        for section, key in SECRET_URLS:
            if dumped[section].get(key):
                dumped[section][key] = redact_uri(dumped[section][key])
        return dumped

    def with_secrets_of(self, given: SweepConfig) -> SweepConfig:
        """This sweep (read back from a run folder, its passwords `***`) with the passwords of `given`
        (the sweep this invocation was given) where the URLs are the same but for the password."""
        updates: dict[str, Any] = {}
        for section, key in SECRET_URLS:
            saved, mine = getattr(getattr(self, section), key), getattr(getattr(given, section), key)
            if not is_redacted(saved):
                continue
            if not mine or redact_uri(mine) != saved:
                raise UserError(f"{section}.{key} of this run is {saved}: its password is not saved with the run; "
                                "resume with the sweep file that names it: tune run FILE --resume")
            updates[section] = getattr(self, section).model_copy(update={key: mine})
        return self.model_copy(update=updates) if updates else self

    def document(self) -> dict[str, Any]:
        """The resolved sweep as saved beside a run (`sweep.json`), with the file it came from. With
        its own `model:` or `trainable:`, the space holds only the keys the file set: which of the
        seed's keys a trial gets depends on that (`space_entries`)."""
        document = {**self.dump(), "source": str(self.source) if self.source else None}
        entries = self.space_entries()
        document["space"] = {k: v for k, v in document["space"].items() if k in entries}
        return document

    @property
    def step_key(self) -> str:
        """The report key that counts a trial's progress (ASHA's time, MLflow's step): `epoch`, or
        Tune's report counter for a trainable of the user's (whose own `epoch`, if any, may start at
        0 or count something else)."""
        return "training_iteration" if self.trainable else "epoch"

    def space_entries(self) -> dict[str, Any]:
        """The space as trials get it. The loop's optional keys (optimizer, lr_schedule, augment) are
        included only where the sweep file sets them (a sweep that does not, trains, logs and reports
        exactly as before they existed); with a `model:` callable, so are the seed's model switches
        (batch_norm, skip, dropout)."""
        entries = self.space.entries()
        chosen = {*self.space.model_fields_set, *self.space.extra_keys()}
        if self.trainable is not None:  # its config holds exactly what the file sets
            return {k: v for k, v in entries.items() if k in chosen}
        hidden = set(OPTIONAL_LOOP_KEYS) - chosen
        if self.model is not None:
            hidden |= set(MODEL_SWITCHES) - chosen
        return {k: v for k, v in entries.items() if k not in hidden}

    def searched(self) -> dict[str, Any]:
        """The searched entries of `space_entries()`, by key."""
        return {k: v for k, v in self.space_entries().items() if is_distribution(v)}

    def trial_config(self) -> dict[str, Any]:
        """The fixed part of every trial's config (values that are not searched)."""
        fixed = {k: v for k, v in self.space_entries().items() if not is_distribution(v)}
        return {**fixed, "epochs": self.epochs}

    def code_refs(self) -> dict[str, str]:
        """The callables the sweep names, by key: `model`, `trainable`, `data.dataset`."""
        refs = {"model": self.model, "trainable": self.trainable,
                "data.dataset": self.data.dataset if self.data.is_custom else None}
        return {k: v for k, v in refs.items() if v}

    def code_folders(self) -> list[Path]:
        """Where the user's modules are: the `code:` folder (relative to the sweep file), else the
        sweep file's own folder; none for a sweep that names no callable."""
        if self.model is None and self.trainable is None and not self.data.is_custom:
            return []
        base = self.source.resolve().parent if self.source else Path.cwd()
        return [(base / self.code).resolve() if self.code else base]


def _check_own_code(config: SweepConfig) -> None:
    if config.trainable is None:
        return
    if config.model is not None:
        raise ValueError("model and trainable exclude each other: a trainable builds its own model")
    changed = [k for k, v in config.data.model_dump().items() if v != DataSection.model_fields[k].default]
    if changed:
        raise ValueError(f"data.{changed[0]}: a sweep with its own `trainable:` loads its own data; remove the "
                         "data section")


def _check_space_keys(space: Space, model: str | None) -> None:
    for key in space.extra_keys():
        if model is None:
            known = ", ".join(type(space).model_fields)
            raise ValueError(f"space.{key}: unknown key; expected one of: {known} (any other key belongs to "
                             "your own network, `model: package.module:callable`, or trainable, `trainable: …`)")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,99}", key):
            raise ValueError(f"space.{key}: not a valid key (letters, digits and _, not starting with a digit)")


def _check_scheduler(scheduler: Scheduler, epochs: int) -> None:
    if scheduler.max_t > epochs:
        raise ValueError(f"scheduler.max_t is {scheduler.max_t}, but must be <= epochs ({epochs})")
    if scheduler.type != "asha":
        if scheduler.min_peers:
            raise ValueError(f"scheduler.min_peers is {scheduler.min_peers}, but a {scheduler.type} scheduler stops "
                             "no trial: remove it, or use type asha")
        return
    if scheduler.grace_period > scheduler.max_t:
        raise ValueError(
            f"scheduler.grace_period is {scheduler.grace_period}, "
            f"but must be <= max_t ({scheduler.max_t})"
        )
    span = scheduler.max_t / scheduler.grace_period
    rungs = math.log(span) / math.log(scheduler.reduction_factor) if span > 1 else 0
    if rungs > MAX_RUNGS:
        smallest = math.ceil(span ** (1 / MAX_RUNGS) * 100) / 100
        raise ValueError(
            f"scheduler.reduction_factor is {scheduler.reduction_factor}, which makes {rungs:.3g} ASHA rungs "
            f"between grace_period {scheduler.grace_period} and max_t {scheduler.max_t}, but at most "
            f"{MAX_RUNGS} are allowed (use a reduction_factor >= {smallest:g})"
        )


def _check_start_from(points: list[dict[str, Any]], searched: dict[str, Any]) -> None:
    """Each configuration to evaluate first names searched keys only, each with a value it can take."""
    for index, point in enumerate(points):
        where = f"search.start_from.{index}"
        if not point:
            raise ValueError(f"{where}: is empty; give values of searched keys, e.g. {{lr: 0.001}}")
        for key, value in point.items():
            dist = searched.get(key)
            if dist is None:
                raise ValueError(f"{where}.{key}: not a searched key (searched: {', '.join(searched) or 'none'})")
            if hasattr(dist, "values"):
                ok = (value in dist.values() and type(value) is type(dist.values()[0])) or (
                    isinstance(value, (int, float)) and not isinstance(value, bool)
                    and any(v == value and not isinstance(v, bool) for v in dist.values()))
            else:
                ok = isinstance(value, (int, float)) and not isinstance(value, bool) and dist.low <= value <= dist.high
            if not ok:
                raise ValueError(f"{where}.{key}: {value!r} is not a value of {dist.describe()}")


def _check_algorithm(algorithm: str, searched: dict[str, Any]) -> None:
    for key, dist in searched.items():
        if dist.kind == "grid" and algorithm == "optuna":
            raise ValueError(
                f"space.{key} is a grid, but search.algorithm is optuna: "
                "use choice with optuna, or set search.algorithm to grid"
            )
        if algorithm == "grid" and dist.kind != "grid":
            raise ValueError(
                f"space.{key} is {dist.kind}, but search.algorithm is grid: "
                "every searched key of a grid sweep must be a grid"
            )
