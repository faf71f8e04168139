"""Search distributions as they are written in a sweep file: `{loguniform: [1e-4, 1e-2]}`."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Generic, TypeVar, Union

from pydantic import AliasChoices, BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

T = TypeVar("T")


class _Distribution(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    kind: ClassVar[str]

    def grid_size(self) -> int:
        """How many trials one sample of this distribution expands to (grids only)."""
        return 1

    def to_tune(self) -> Any:
        """This distribution as a Ray Tune search domain."""
        raise NotImplementedError

    def to_optuna(self) -> Any:
        """This distribution as an Optuna distribution."""
        raise NotImplementedError

    def describe(self) -> str:
        """How MLflow shows it as a parameter of the parent run: `loguniform(0.0001, 0.01)`."""
        raise NotImplementedError


class _Listed(_Distribution, Generic[T]):
    """A distribution over listed values; Optuna and MLflow see both kinds the same way."""

    def values(self) -> list[Any]:
        return list(getattr(self, self.kind))

    def to_optuna(self) -> Any:
        from optuna.distributions import CategoricalDistribution

        return CategoricalDistribution(self.values())

    def describe(self) -> str:
        return f"{self.kind}({', '.join(map(repr, self.values()))})"


class Choice(_Listed[T], Generic[T]):
    """Sample one of the listed values."""

    kind: ClassVar[str] = "choice"
    choice: list[T] = Field(min_length=1)

    def to_tune(self) -> Any:
        from ray import tune

        return tune.choice(self.values())


class Grid(_Listed[T], Generic[T]):
    """Run every listed value (Tune's grid search)."""

    kind: ClassVar[str] = "grid"
    grid: list[T] = Field(min_length=1)

    def grid_size(self) -> int:
        return len(self.grid)

    def to_tune(self) -> Any:
        from ray import tune

        return tune.grid_search(self.values())


class _Range(_Distribution, Generic[T]):
    @property
    def low(self) -> Any:
        return self._bounds()[0]

    @property
    def high(self) -> Any:
        return self._bounds()[1]

    def _bounds(self) -> tuple[Any, Any]:
        raise NotImplementedError

    def describe(self) -> str:
        return f"{self.kind}({self.low!r}, {self.high!r})"

    @model_validator(mode="after")
    def _check_order(self) -> _Range:
        if self.low > self.high:
            raise ValueError(f"low is {self.low}, but must be <= high ({self.high})")
        return self


class Uniform(_Range[T], Generic[T]):
    """A float sampled uniformly in [low, high]."""

    kind: ClassVar[str] = "uniform"
    uniform: tuple[T, T]

    def _bounds(self) -> tuple[Any, Any]:
        return self.uniform

    def to_tune(self) -> Any:
        from ray import tune

        return tune.uniform(self.low, self.high)

    def to_optuna(self) -> Any:
        from optuna.distributions import FloatDistribution

        return FloatDistribution(self.low, self.high)


class LogUniform(_Range[T], Generic[T]):
    """A float sampled uniformly in log space in [low, high]; low must be > 0."""

    kind: ClassVar[str] = "loguniform"
    loguniform: tuple[T, T]

    def _bounds(self) -> tuple[Any, Any]:
        return self.loguniform

    def to_tune(self) -> Any:
        from ray import tune

        return tune.loguniform(self.low, self.high)

    def to_optuna(self) -> Any:
        from optuna.distributions import FloatDistribution

        return FloatDistribution(self.low, self.high, log=True)

    @model_validator(mode="after")
    def _check_positive(self) -> LogUniform:
        if self.low <= 0:
            raise ValueError(f"low is {self.low}, but must be > 0 on a log scale")
        return self


class IntRange(_Range[T], Generic[T]):
    """An integer sampled uniformly in [low, high], both included (`int` or `randint`)."""

    kind: ClassVar[str] = "int"
    bounds: tuple[T, T] = Field(validation_alias=AliasChoices("int", "randint"))

    def _bounds(self) -> tuple[Any, Any]:
        return self.bounds

    def to_tune(self) -> Any:
        from ray import tune

        return tune.randint(self.low, self.high + 1)  # Tune's upper bound is exclusive

    def to_optuna(self) -> Any:
        from optuna.distributions import IntDistribution

        return IntDistribution(self.low, self.high)


DISTRIBUTIONS: dict[str, type[_Distribution]] = {
    d.kind: d for d in (Choice, Grid, Uniform, LogUniform, IntRange)
}
ALIASES = {"randint": "int"}


def _kind_of(raw: Any) -> str:
    if isinstance(raw, _Distribution):
        return raw.kind
    if isinstance(raw, dict) and raw:
        for key in raw:
            kind = ALIASES.get(key, key)
            if kind in DISTRIBUTIONS:
                return kind
        return str(next(iter(raw)))
    return "fixed"


def param_spec(value_type: Any, kinds: tuple[str, ...]) -> Any:
    """The type of one search-space entry: a fixed `value_type` or one of `kinds`."""
    members = [Annotated[value_type, Tag("fixed")]]
    members += [Annotated[DISTRIBUTIONS[k][value_type], Tag(k)] for k in kinds]
    return Annotated[
        Union[tuple(members)],  # noqa: UP007 - built dynamically
        Discriminator(
            _kind_of,
            custom_error_type="distribution",
            custom_error_message=f"expected a fixed value or one of: {', '.join(kinds)}",
        ),
    ]


def is_distribution(value: Any) -> bool:
    return isinstance(value, _Distribution)


def open_spec() -> Any:
    """The type of a space key the seed does not know (a `model:` callable's own argument):
    a fixed bool, int, float or string, a choice or grid of them, or a numeric range."""
    from pydantic import StrictBool, StrictFloat, StrictInt

    value = Union[StrictBool, StrictInt, StrictFloat, str]  # noqa: UP007 - order matters: bool before int
    members = [
        Annotated[value, Tag("fixed")],
        Annotated[Choice[value], Tag("choice")],
        Annotated[Grid[value], Tag("grid")],
        Annotated[Uniform[float], Tag("uniform")],
        Annotated[LogUniform[float], Tag("loguniform")],
        Annotated[IntRange[int], Tag("int")],
    ]
    return Annotated[
        Union[tuple(members)],  # noqa: UP007 - built dynamically
        Discriminator(_kind_of, custom_error_type="distribution",
                      custom_error_message=f"expected a fixed value or one of: {', '.join(DISTRIBUTIONS)}"),
    ]


def representative(value: Any) -> Any:
    """One value a distribution can take (the first listed, or the low end): to try a model once."""
    if not is_distribution(value):
        return value
    if isinstance(value, _Listed):
        return value.values()[0]
    return value.low
