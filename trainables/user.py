"""A user's own Ray Tune function trainable (`trainable: package.module:callable`), run as it is.

The function reports with `tune.report(metrics, checkpoint=…)` and resumes from
`tune.get_checkpoint()`, as under `ray.tune.Tuner`. Around it the tool adds two things: each
report must carry the sweep's metric (the first one that does not errors the trial with a line
naming the metric and the keys it did report; Tune itself would stop the whole sweep), and each
report is tagged with the node it ran on.
"""

from __future__ import annotations

from typing import Any

import ray
from ray import tune
from ray.train._internal.session import get_session

from core.entrypoints import resolve


class MetricNotReported(ValueError):
    """A trainable's report lacks the sweep's metric, or it reported nothing at all."""


def run_user_trainable(config: dict[str, Any], ref: str, metric: str) -> None:
    """Run the trainable `ref` with the trial's `config`, checking each report for `metric`."""
    import logging

    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)  # a line per checkpoint
    fn = resolve(ref, "trainable")
    session = get_session()
    node_id = ray.get_runtime_context().get_node_id()
    restored = tune.get_checkpoint() is not None
    original = session.report
    reported = 0

    def report(metrics: dict, checkpoint: Any = None) -> None:
        nonlocal reported
        if metric not in metrics:
            raise MetricNotReported(f"trainable {ref} reported {', '.join(sorted(map(str, metrics))) or 'nothing'} "
                                    f"but not the sweep's metric {metric!r}")
        reported += 1
        original({**metrics, "node_id": node_id}, checkpoint=checkpoint)

    session.report = report  # what tune.report calls, however the trainable imported it
    try:
        fn(config)
    finally:
        session.report = original
    if not reported and not restored:
        raise MetricNotReported(f"trainable {ref} returned without reporting the sweep's metric {metric!r} "
                                "(call tune.report({...}) at least once)")
