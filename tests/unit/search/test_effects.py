"""The statistics of `tune ablate`, checked against cases computed by hand."""

from __future__ import annotations

import itertools

import pytest

from search.effects import ablation_effects, effects_table, forest_plot, paired_effect


def test_a_paired_t_test_by_hand():
    # diffs 1..5: mean 3, sd sqrt(2.5), se sqrt(0.5); t(0.975, 4) = 2.776445; t = 3 / sqrt(0.5) = 4.2426
    effect = paired_effect([1, 2, 3, 4, 5])
    half = 2.7764451051977987 * 0.5 ** 0.5
    assert effect["method"] == "paired t-test" and effect["n"] == 5 and effect["mean"] == 3
    assert effect["ci_low"] == pytest.approx(3 - half) and effect["ci_high"] == pytest.approx(3 + half)
    assert effect["p_value"] == pytest.approx(0.013236, abs=1e-6)


def test_few_seeds_get_a_bootstrap_interval_and_an_exact_sign_flip_p():
    effect = paired_effect([0.01, 0.02, 0.03])
    assert effect["method"].startswith("bootstrap") and "rough" in effect["method"]
    assert effect["ci_low"] == pytest.approx(0.01) and effect["ci_high"] == pytest.approx(0.03)
    assert effect["p_value"] == pytest.approx(0.25)  # 2 of the 8 sign patterns are as extreme
    assert paired_effect([0.5])["ci_low"] is None and paired_effect([])["n"] == 0


def test_effects_are_paired_by_seed_and_averaged_over_the_other_factor():
    # test_acc = 0.9 + seed noise + 0.01 × bn + 0.002 × skip + 0.004 × bn × skip (per seed: exact)
    noise = {0: 0.0, 1: 0.003, 2: -0.002, 3: 0.001, 4: -0.004}
    trials = [{"status": "completed", "config": {"batch_norm": bn, "skip": skip, "seed": seed},
               "test_acc": 0.9 + noise[seed] + 0.01 * bn + 0.002 * skip + 0.004 * bn * skip}
              for bn, skip, seed in itertools.product((True, False), (True, False), noise)]
    trials.append({"status": "errored", "config": {"batch_norm": True, "skip": True, "seed": 9}})
    rows = {r["contrast"]: r for r in ablation_effects(trials, {"batch_norm": [True, False], "skip": [True, False]},
                                                         metrics=["test_acc"])}
    # bn on − off, averaged over skip: 0.01 + 0.004 / 2, the same at every seed (the noise cancels)
    assert rows["batch_norm: False − True"]["mean"] == pytest.approx(-0.012)
    assert rows["skip: False − True"]["mean"] == pytest.approx(-(0.002 + 0.002))
    interaction = rows["batch_norm × skip (interaction)"]
    assert interaction["mean"] == pytest.approx(0.004) and interaction["n"] == 5
    assert interaction["method"] == "identical differences" and interaction["ci_low"] == pytest.approx(0.004)


def test_a_missing_pair_leaves_that_seed_out():
    trials = [{"status": "completed", "config": {"bn": bn, "seed": s}, "val_acc": 0.9 + 0.01 * bn + 0.001 * s * bn}
              for bn in (True, False) for s in range(6)]
    trials = [t for t in trials if t["config"] != {"bn": False, "seed": 5}]
    (row,) = ablation_effects(trials, {"bn": [True, False]}, metrics=["val_acc"])
    assert row["n"] == 5 and row["mean"] == pytest.approx(-(0.01 + 0.001 * 2))  # seeds 0..4: mean s = 2


def test_the_table_and_the_forest_plot(tmp_path):
    rows = ablation_effects([{"status": "completed", "config": {"bn": bn, "seed": s}, "test_acc": 0.9 + 0.01 * bn
                              + 0.001 * s} for bn in (True, False) for s in range(5)], {"bn": [True, False]},
                            metrics=["test_acc"])
    table = effects_table(rows)
    assert "bn: False − True" in table and "-1.00 pp" in table and "identical differences" in table
    assert forest_plot(rows, str(tmp_path / "forest.png")) and (tmp_path / "forest.png").stat().st_size > 1000
    assert not forest_plot(rows, str(tmp_path / "none.png"), metric="val_loss")
