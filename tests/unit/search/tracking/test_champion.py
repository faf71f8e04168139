"""The `champion` alias moves only when a new version beats it on validation (a registry in memory)."""

from __future__ import annotations

from types import SimpleNamespace

from mlflow.exceptions import MlflowException

from search.tracking.champion import CHAMPION_ALIAS, decide_champion


class Registry:
    """The part of MlflowClient the decision uses: versions with tags, and aliases."""

    def __init__(self, scores: dict[str, float]) -> None:
        self.versions = {v: SimpleNamespace(version=v, tags={"val_loss": str(s), "test_acc": "0.9"})
                         for v, s in scores.items()}
        self.aliases: dict[str, str] = {}

    def get_model_version(self, name, version):
        return self.versions[version]

    def get_model_version_by_alias(self, name, alias):
        if alias not in self.aliases:
            raise MlflowException(f"alias {alias} not found")
        return self.versions[self.aliases[alias]]

    def set_registered_model_alias(self, name, alias, version):
        self.aliases[alias] = version


def test_the_first_version_becomes_champion():
    registry = Registry({"1": 0.3})
    decision = decide_champion(registry, "m", "1", "val_loss", "min")
    assert decision.moved and registry.aliases[CHAMPION_ALIAS] == "1" and "first champion" in decision.reason


def test_a_better_version_takes_over_and_a_worse_one_does_not():
    registry = Registry({"1": 0.3, "2": 0.2, "3": 0.25})
    decide_champion(registry, "m", "1", "val_loss", "min")
    assert decide_champion(registry, "m", "2", "val_loss", "min").moved
    kept = decide_champion(registry, "m", "3", "val_loss", "min")
    assert not kept.moved and registry.aliases[CHAMPION_ALIAS] == "2"
    assert kept.reason.startswith("kept version 2")


def test_a_tie_keeps_the_incumbent_and_max_metrics_compare_upwards():
    registry = Registry({"1": 0.3, "2": 0.3})
    decide_champion(registry, "m", "1", "val_loss", "min")
    assert not decide_champion(registry, "m", "2", "val_loss", "min").moved
    accuracy = Registry({"1": 0.97, "2": 0.98})
    for version in accuracy.versions.values():
        version.tags["val_acc"] = version.tags.pop("val_loss")
    decide_champion(accuracy, "m", "1", "val_acc", "max")
    assert decide_champion(accuracy, "m", "2", "val_acc", "max").moved


def test_deciding_twice_for_the_same_version_changes_nothing():
    registry = Registry({"1": 0.3})
    decide_champion(registry, "m", "1", "val_loss", "min")
    again = decide_champion(registry, "m", "1", "val_loss", "min")
    assert not again.moved and "already the champion" in again.reason


def test_a_version_without_a_measured_score_never_challenges():
    """A user trainable's model replayed from a run folder is registered without scores (nothing here can
    measure it); it must not become champion on a claim."""
    registry = Registry({"1": 0.3, "2": 0.1})
    decide_champion(registry, "m", "1", "val_loss", "min")
    del registry.versions["2"].tags["val_loss"]
    decision = decide_champion(registry, "m", "2", "val_loss", "min")
    assert not decision.moved and registry.aliases[CHAMPION_ALIAS] == "1" and decision.champion_version == "1"
    assert "carries no measured val_loss" in decision.reason
