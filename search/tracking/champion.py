"""The `champion` alias: the registered model that has won every comparison so far.

`best` points at the latest sweep's best model; `champion` moves only when a new version beats it
on the sweep's metric on validation (the test accuracy is recorded beside it, never used to
decide). `schedule.promote: paired` (the default) measures both models on the same validation
examples now, whatever split or data version the champion was measured on when it was registered,
and moves only when the challenger is better beyond noise (`search.tracking.paired`);
`any_better` compares the two registered summary numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

CHAMPION_ALIAS = "champion"


@dataclass(frozen=True)
class Decision:
    moved: bool
    champion_version: str
    reason: str
    paired: dict[str, float] = field(default_factory=dict)  # difference, low, high, p_value (paired rule)


@dataclass(frozen=True)
class PairedRule:
    """What the paired rule needs: both models on the same validation examples."""

    confidence: float
    validation: Callable[[], tuple[Any, Any]]  # the validation split as tensors, loaded when first needed
    load: Callable[[str], Any]  # a registered version -> its network


def is_better(candidate: float, incumbent: float, mode: str) -> bool:
    return candidate < incumbent if mode == "min" else candidate > incumbent


def decide_champion(client, model_name: str, version: str, metric: str, mode: str,  # type: ignore[no-untyped-def]
                    paired: PairedRule | None = None) -> Decision:
    """Move `champion` to `version` if it beats the current champion on `metric` (by the paired rule when
    given, else on the registered numbers); say why either way."""
    from mlflow.exceptions import MlflowException

    candidate = client.get_model_version(model_name, version)
    if metric not in candidate.tags:  # registered from a run folder without a measured score
        current = _champion_version(client, model_name)
        return Decision(False, current or "", f"version {version} carries no measured {metric}: it does not "
                        "challenge the champion")
    score = float(candidate.tags[metric])
    try:
        incumbent = client.get_model_version_by_alias(model_name, CHAMPION_ALIAS)
    except MlflowException:
        incumbent = None
    if incumbent is not None and str(incumbent.version) == str(candidate.version):
        return Decision(False, str(incumbent.version), f"version {version} is already the champion")
    if incumbent is not None and paired is not None and metric in ("val_loss", "val_acc"):
        return _decide_paired(client, model_name, candidate, incumbent, metric, paired)
    if incumbent is not None:
        best = float(incumbent.tags[metric])
        if not is_better(score, best, mode):
            return Decision(False, str(incumbent.version),
                            f"kept version {incumbent.version}: its {metric} {best:.6g} is not beaten by "
                            f"version {version}'s {score:.6g} (test_acc {candidate.tags.get('test_acc')})")
        reason = (f"version {version} ({metric} {score:.6g}, test_acc {candidate.tags.get('test_acc')}) "
                  f"beats version {incumbent.version} ({metric} {best:.6g})")
    else:
        reason = f"version {version} is the first champion ({metric} {score:.6g})"
    client.set_registered_model_alias(model_name, CHAMPION_ALIAS, version)
    return Decision(True, str(version), reason)


def _decide_paired(client, model_name: str, candidate, incumbent, metric: str,  # type: ignore[no-untyped-def]
                   rule: PairedRule) -> Decision:
    from search.tracking.paired import compare_paired

    result = compare_paired(metric, rule.load(str(candidate.version)), rule.load(str(incumbent.version)),
                            rule.validation(), rule.confidence)
    numbers = {"difference": result.difference, "low": result.low, "high": result.high, "p_value": result.p_value}
    if not result.better(rule.confidence):
        return Decision(False, str(incumbent.version), f"kept version {incumbent.version}: version "
                        f"{candidate.version} is not better beyond noise ({result.text(rule.confidence)})", numbers)
    client.set_registered_model_alias(model_name, CHAMPION_ALIAS, str(candidate.version))
    return Decision(True, str(candidate.version), f"version {candidate.version} beats version {incumbent.version} "
                    f"beyond noise ({result.text(rule.confidence)})", numbers)


def _champion_version(client, model_name: str) -> str | None:  # type: ignore[no-untyped-def]
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(model_name, CHAMPION_ALIAS).version)
    except MlflowException:
        return None
