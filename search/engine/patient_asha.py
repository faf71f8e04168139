"""ASHA that waits for peers before it promotes on a quantile.

Ray's asynchronous ASHA promotes a trial at a rung when it is in the top 1/η of the results
recorded there so far; at the start of a sweep a rung has few or none, so the first trials
are promoted almost unconditionally (one 30-minute `tune run default` ran 11 of its first 32
trials to the last epoch). Here, while a rung has recorded fewer than `min_peers` results, a
trial goes on only when it beats every one of them (the first to arrive stops there); from
`min_peers` on, Ray's rule applies unchanged. Its results are still recorded at the rung, so
the wait costs no trial its place in the comparison.
"""

from __future__ import annotations

import math
from typing import Any

from ray.tune.schedulers import ASHAScheduler
from ray.tune.schedulers.async_hyperband import _Bracket


class _PatientBracket(_Bracket):
    def __init__(self, *args: Any, min_peers: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.min_peers = min_peers

    def cutoff(self, recorded: dict[str, float]) -> float | None:
        if len(recorded) >= self.min_peers:
            return super().cutoff(recorded)
        finite = [v for v in recorded.values() if not math.isnan(v)]
        return max(finite) if finite else math.inf  # rewards are maximised: only a new best goes on


class PatientASHAScheduler(ASHAScheduler):
    """`ASHAScheduler` whose rungs promote on a quantile only once `min_peers` results are recorded."""

    def __init__(self, *, time_attr: str, max_t: int, grace_period: int, reduction_factor: float,
                 min_peers: int) -> None:
        super().__init__(time_attr=time_attr, max_t=max_t, grace_period=grace_period,
                         reduction_factor=reduction_factor)
        self.min_peers = min_peers
        self._brackets = [_PatientBracket(grace_period, max_t, reduction_factor, 0, min_peers=min_peers)]
