"""Retry with exponential backoff on transient errors, shared by the BigQuery and Pub/Sub sinks."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["RetriesExhausted", "is_transient", "with_backoff"]

LOG = logging.getLogger(__name__)
T = TypeVar("T")


class RetriesExhausted(RuntimeError):
    """A transient error outlasted the retry budget; `__cause__` is the last error."""


def is_transient(err: BaseException) -> bool:
    """Outages, overload and timeouts are worth retrying; a bad request is not."""
    from google.api_core import exceptions as gexc

    if isinstance(err, (gexc.ServerError, gexc.TooManyRequests, gexc.DeadlineExceeded)):
        return True
    if isinstance(err, gexc.GoogleAPICallError):
        return False
    try:
        import requests

        if isinstance(err, (requests.ConnectionError, requests.Timeout)):
            return True
    except ImportError:  # pragma: no cover - requests comes with google-cloud-bigquery
        pass
    return isinstance(err, (ConnectionError, TimeoutError, OSError))


def with_backoff(
    call: Callable[[], T],
    budget_secs: float,
    *,
    what: str,
    first_delay: float = 0.25,
    max_delay: float = 8.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Call until it succeeds, a non-transient error is raised, or `budget_secs` is spent."""
    deadline = clock() + budget_secs
    delay = first_delay
    attempt = 0
    while True:
        attempt += 1
        try:
            return call()
        except Exception as err:
            if not is_transient(err):
                raise
            remaining = deadline - clock()
            if remaining <= 0:
                raise RetriesExhausted(f"{what}: gave up after {attempt} attempts: {err}") from err
            pause = min(delay * (0.5 + random.random()), max_delay, remaining)
            LOG.warning("%s failed (attempt %d, retrying in %.1fs): %s", what, attempt, pause, err)
            sleep(pause)
            delay = min(delay * 2, max_delay)
