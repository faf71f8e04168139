"""A trivial Ray Tune function trainable for the driver-overhead benchmark: it sleeps for
`config["seconds"]` and reports once, so a sweep's wall time beyond trials × seconds ÷ slots is
the cost of running trials, not of training them."""

import time

from ray import tune


def sleep_then_report(config):
    time.sleep(config["seconds"])
    tune.report({"score": config["x"]})
