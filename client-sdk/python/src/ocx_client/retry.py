"""Backoff and the retry budget shared by unary calls, followers and uploads.

A retry budget is a number of seconds: how long a call (or an upload, while no batch is
acknowledged) keeps retrying a transient failure before it gives up. The default, 30 s, rides
out a normal server restart; ``Client(retry_budget=...)`` changes it.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

import grpc

#: First delay before a retry or a reconnect, and the delay again after any progress.
INITIAL_BACKOFF = 0.1
#: Longest delay between two attempts: short enough that a restarted server is found promptly.
MAX_BACKOFF = 5.0
#: Seconds a call keeps retrying UNAVAILABLE (an upload: seconds without an acknowledgement)
#: before it gives up; more than a normal server restart takes.
DEFAULT_RETRY_BUDGET = 30.0
#: Codes after which a stream (a follower, an upload) is opened again: the server is shutting
#: down or unreachable (UNAVAILABLE), the key holds its most streams for now
#: (RESOURCE_EXHAUSTED), or the server gave up on a conflict (ABORTED).
RETRYABLE_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED}
)


def backoff_delays(
    initial: float = INITIAL_BACKOFF,
    maximum: float = MAX_BACKOFF,
    *,
    jitter: bool = True,
    random_fraction: Callable[[], float] = random.random,
) -> Iterator[float]:
    """Delays for successive attempts: ``initial`` doubling up to ``maximum``.

    With ``jitter`` each delay is drawn from its upper half (``[d/2, d]``), so that clients
    that failed together (a server restart) do not come back in lockstep.
    """
    delay = initial
    while True:
        yield delay * (0.5 + 0.5 * random_fraction()) if jitter else delay
        delay = min(delay * 2, maximum)


def status_code(error: BaseException) -> grpc.StatusCode | None:
    """The status code of a grpc error, or ``None`` for anything else."""
    code = getattr(error, "code", None)
    if not callable(code):
        return None
    try:
        value = code()
    except Exception:  # noqa: BLE001 - an error object that cannot say: no code
        return None
    return value if isinstance(value, grpc.StatusCode) else None


def status_details(error: BaseException) -> str:
    """The details of a grpc error, or its text."""
    details = getattr(error, "details", None)
    if not callable(details):
        return str(error)
    try:
        return str(details())
    except Exception:  # noqa: BLE001 - an error object that cannot say: its text
        return str(error)


def describe(error: BaseException) -> str:
    """``CODE: details`` of a grpc error (for messages and logs)."""
    code = status_code(error)
    return f"{code.name if code else type(error).__name__}: {status_details(error)}"


class LocalRpcError(grpc.RpcError):
    """A status made up on this side (e.g. nothing acknowledged within the retry budget), with
    ``code()`` and ``details()`` as grpc's own errors have."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details
