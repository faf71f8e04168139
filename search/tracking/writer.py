"""Deliver MLflow calls through outages: retry with backoff, buffer in order, flush when back.

A tracking server that is down or slow must never stop a trial or the sweep. Calls
go into a FIFO drained by one thread; a call that fails for a transient reason is
retried (exponential backoff) while later calls wait behind it, so the order of
what reaches MLflow is the order of events. A call MLflow rejects outright (a 4xx)
is logged and dropped.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

BACKOFF_START_S = 0.5
BACKOFF_MAX_S = 10.0


def is_permanent(err: BaseException) -> bool:
    """True for errors retrying cannot fix: MLflow rejected the request itself (HTTP 4xx)."""
    from mlflow.exceptions import MlflowException

    if isinstance(err, MlflowException):
        status = err.get_http_status_code()
        return 400 <= status < 500
    return isinstance(err, (TypeError, ValueError, KeyError, AttributeError))


def call_with_retry(
    fn: Callable[[], Any], what: str, deadline: float | Callable[[], float | None] | None = None
) -> Any:
    """Call `fn` until it succeeds, a permanent error, or `deadline` (time.monotonic) passes.

    `deadline` may be a callable, read after each failure, so a caller can set one later.
    """
    delay = BACKOFF_START_S
    warned = False
    while True:
        try:
            result = fn()
        except Exception as err:
            if is_permanent(err):
                raise
            limit = deadline() if callable(deadline) else deadline
            if limit is not None and time.monotonic() + delay > limit:
                raise
            if not warned:
                log.warning("mlflow: %s failed (%s); retrying with backoff", what, _short(err))
                warned = True
            time.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX_S)
            continue
        if warned:
            log.warning("mlflow: %s went through after retrying", what)
        return result


def _short(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:200]}"


class BufferedWriter:
    """A background thread that delivers queued MLflow calls in order, retrying through outages."""

    def __init__(self, name: str = "mlflow-writer") -> None:
        self._queue: queue.Queue[tuple[str, Callable[[], Any]] | None] = queue.Queue()
        self._idle = threading.Event()
        self._idle.set()
        self._stop_at: float | None = None
        self._pending = 0
        self._lock = threading.Lock()
        self.dropped = 0
        self._thread = threading.Thread(target=self._drain, name=name, daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        with self._lock:
            return self._pending

    def submit(self, what: str, fn: Callable[[], Any]) -> None:
        """Queue one call; returns at once."""
        with self._lock:
            self._pending += 1
            self._idle.clear()
        self._queue.put((what, fn))

    def flush(self, timeout_s: float) -> bool:
        """Wait until every queued call is delivered; False if `timeout_s` passed first."""
        return self._idle.wait(timeout_s)

    def close(self, timeout_s: float) -> bool:
        """Deliver what is queued within `timeout_s`, then stop the thread.

        Returns False if any call was not delivered (still queued, or dropped).
        """
        self._stop_at = time.monotonic() + timeout_s
        flushed = self.flush(timeout_s)
        self._queue.put(None)
        self._thread.join(timeout=1.0)
        return flushed and self.dropped == 0

    def _drain(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            what, fn = item
            try:
                call_with_retry(fn, what, deadline=lambda: self._stop_at)
            except Exception as err:
                self.dropped += 1
                log.error("mlflow: gave up on %s: %s", what, _short(err))
            with self._lock:
                self._pending -= 1
                if self._pending == 0:
                    self._idle.set()
