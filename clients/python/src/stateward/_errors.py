"""Exceptions of the stateward client."""

from __future__ import annotations

from typing import Any


class StatewardError(Exception):
    """Base class of every error this package raises on purpose."""


class WriterBusy(StatewardError):
    """Another writer (in this or another process, in any language) holds the
    agent name: its journal has one writer at a time."""


class Closed(StatewardError):
    """The agent was closed, or closed itself after a failed write or fsync
    (the tail of its journal is unknown until the next open repairs it)."""


class SeqExhausted(StatewardError):
    """The agent's journal reached seq 2^64-1, the largest there is: a seq
    never wraps, so there is no next one (write as a new agent)."""


class Timeout(StatewardError, TimeoutError):
    """No result (or no consistent read) came in the time allowed.

    ``seq`` is the intent waited for, if any: it is durable in the journal and
    the watcher will still decide it, so the change may yet be applied."""

    def __init__(self, message: str, seq: int | None = None) -> None:
        super().__init__(message)
        self.seq = seq


class ResultGone(StatewardError):
    """The result was written but its results segment has since been deleted
    under the watcher's retention policy (journal.ErrResultGone in Go)."""


class Unversioned(StatewardError):
    """The document on disk matches no version the watcher committed: it was
    changed outside stateward and the watcher has not adopted it yet (or is
    stopped). Raised by read() when that lasts the whole timeout."""


class Conflict(StatewardError):
    """update(): every attempt allowed ended in a conflict.

    ``result`` is the last conflict result, ``attempts`` the number of intents
    submitted."""

    def __init__(self, message: str, result: dict[str, Any], attempts: int) -> None:
        super().__init__(message)
        self.result = result
        self.attempts = attempts


class Rejected(StatewardError):
    """update(): the watcher rejected the intent as invalid (bad path,
    unknown op, ...); retrying cannot help. ``result`` is the result."""

    def __init__(self, message: str, result: dict[str, Any], attempts: int) -> None:
        super().__init__(message)
        self.result = result
        self.attempts = attempts
