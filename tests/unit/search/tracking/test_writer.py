"""Delivery through outages: retries with backoff, order kept, permanent errors dropped."""

from __future__ import annotations

import time

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, INVALID_PARAMETER_VALUE

from search.tracking import writer as mlflow_writer
from search.tracking.writer import BufferedWriter, call_with_retry, is_permanent


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    monkeypatch.setattr(mlflow_writer, "BACKOFF_START_S", 0.01)
    monkeypatch.setattr(mlflow_writer, "BACKOFF_MAX_S", 0.05)


class Flaky:
    def __init__(self, failures: int, error: Exception | None = None):
        self.failures, self.calls = failures, 0
        self.error = error or ConnectionError("server down")

    def __call__(self):
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "ok"


def test_transient_failures_are_retried_until_success():
    flaky = Flaky(3)
    assert call_with_retry(flaky, "thing") == "ok" and flaky.calls == 4


def test_rejections_are_not_retried():
    rejected = Flaky(5, MlflowException("bad param", error_code=INVALID_PARAMETER_VALUE))
    with pytest.raises(MlflowException):
        call_with_retry(rejected, "thing")
    assert rejected.calls == 1
    assert is_permanent(rejected.error)
    assert not is_permanent(MlflowException("API request failed", error_code=INTERNAL_ERROR))


def test_deadline_ends_retrying():
    with pytest.raises(ConnectionError):
        call_with_retry(Flaky(10**6), "thing", deadline=time.monotonic() + 0.2)


def test_writer_delivers_in_order_through_an_outage():
    writer = BufferedWriter()
    delivered, down = [], {"until": time.monotonic() + 0.3}

    def deliver(n):
        def call():
            if time.monotonic() < down["until"]:
                raise ConnectionError("down")
            delivered.append(n)
        return call

    for n in range(20):
        writer.submit(f"op {n}", deliver(n))
    assert writer.pending > 0
    assert writer.close(timeout_s=10)
    assert delivered == list(range(20)) and writer.dropped == 0


def test_writer_gives_up_at_close_when_the_server_never_returns():
    writer = BufferedWriter()
    for n in range(3):
        writer.submit(f"op {n}", Flaky(10**6))
    assert not writer.close(timeout_s=0.3)
    writer._thread.join(timeout=5)
    assert writer.dropped == 3
