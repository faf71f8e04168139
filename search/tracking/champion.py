"""The `champion` alias: the registered model that has won every comparison so far.

`best` points at the latest sweep's best model; `champion` moves only when a new version
beats it on the sweep's metric on validation (the test accuracy is recorded beside it,
never used to decide).
"""

from __future__ import annotations

from dataclasses import dataclass

CHAMPION_ALIAS = "champion"


@dataclass(frozen=True)
class Decision:
    moved: bool
    champion_version: str
    reason: str


def is_better(candidate: float, incumbent: float, mode: str) -> bool:
    return candidate < incumbent if mode == "min" else candidate > incumbent


def decide_champion(client, model_name: str, version: str, metric: str, mode: str) -> Decision:  # type: ignore[no-untyped-def]
    """Move `champion` to `version` if it beats the current champion on `metric`; say why either way."""
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


def _champion_version(client, model_name: str) -> str | None:  # type: ignore[no-untyped-def]
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(model_name, CHAMPION_ALIAS).version)
    except MlflowException:
        return None
