"""The search-quality comparison: a speedup is never invented, and one arm missing the target is a lower bound."""

from __future__ import annotations

import pytest

from bench.search_quality import compare, speedup


def run(seed: int, wall_s: float, to_target: float | None, to_lower: float | None) -> dict:
    return {"seed": seed, "wall_s": wall_s, "time_to_target_s": to_target, "time_to_s": {"0.98": to_lower}}


def test_speedup_is_a_ratio_when_both_reach_the_target():
    assert speedup(run(0, 200, 50, 10), run(0, 600, 150, 10)) == {"speedup": 3.0, "lower_bound": False}


def test_only_ours_reaching_the_target_gives_a_lower_bound_from_their_whole_sweep():
    assert speedup(run(0, 200, 100, 10), run(0, 700, None, 10)) == {"speedup": 7.0, "lower_bound": True}


def test_no_speedup_when_ours_never_reached_the_target():
    assert speedup(run(0, 200, None, 10), run(0, 700, 300, 10))["speedup"] is None
    assert speedup(run(0, 200, None, 10), run(0, 700, None, 10))["speedup"] is None


def test_compare_takes_the_median_over_seeds_where_we_reached_it_and_each_lower_target():
    ours = [run(0, 200, None, 20), run(1, 300, 100, 10), run(2, 250, 50, 40)]
    random = [run(0, 600, None, 20), run(1, 600, None, 30), run(2, 500, 100, 20)]
    stock = [run(0, 200, None, 20), run(1, 300, 100, 10), run(2, 250, 50, 40)]
    result = compare({"optuna_asha": ours, "random_fifo": random, "stock_optuna_asha": stock}, ["0.98"])
    main = result["random_fifo"]["main"]
    assert main["seeds_reached"] == 2 and main["seeds"] == 3
    assert main["median"] == pytest.approx((6.0 + 2.0) / 2) and main["lower_bound"] is True
    lower = result["random_fifo"]["0.98"]
    assert lower["median"] == pytest.approx(1.0) and lower["lower_bound"] is False  # 1.0, 3.0, 0.5
    assert result["random_fifo"]["wall_ratio"] == pytest.approx([3.0, 2.0, 2.0])
    assert result["stock_optuna_asha"]["main"]["median"] == pytest.approx(1.0)
