"""The Agent: one writer, its results and reads, as one object."""

from __future__ import annotations

import math
import os
import random
import time
from types import TracebackType
from typing import Any, Callable

from ._document import read_document
from ._errors import Conflict, Rejected, Timeout
from ._format import DEFAULT_MAX_LINE, DEFAULT_SEGMENT_SIZE, check_doc_name
from ._results import Results
from ._writer import UNSET, Writer

#: Defaults of update(), as Go's journal.Updater: the ceiling of the backoff
#: after the first conflict, its growth per conflict, and its cap.
DEFAULT_INITIAL_DELAY = 0.005
DEFAULT_BACKOFF_FACTOR = 2.0
DEFAULT_MAX_DELAY = 0.5
DEFAULT_MAX_ATTEMPTS = 50

#: What update()'s function returns: a list of RFC 6902 operations (a JSON
#: patch), a dict (an RFC 7396 merge patch), or None when there is nothing
#: to do.
UpdateFunc = Callable[[Any, int], "list[Any] | dict[str, Any] | None"]


class Agent:
    """One agent of a state directory: appends intents to its journal,
    waits for their results, reads documents with their versions.

    Open it with stateward.open(dir, agent=NAME) and close it (or use it as a
    context manager). One Agent per agent name is open at a time, across
    processes and languages: a second one raises WriterBusy.

    append() is safe from several threads; wait(), submit() and update()
    follow one results folder and must be called from one thread at a time.
    """

    def __init__(
        self,
        dir: str | os.PathLike[str],
        agent: str,
        *,
        lock_timeout: float = 0.0,
        segment_size: int = DEFAULT_SEGMENT_SIZE,
        max_line: int = DEFAULT_MAX_LINE,
        inotify: bool = True,
    ) -> None:
        dir = os.fspath(dir)
        self.dir = dir
        self.name = agent
        self._writer = Writer(dir, agent, segment_size=segment_size, max_line=max_line, lock_timeout=lock_timeout)
        try:
            self._results = Results(dir, agent, inotify=inotify)
        except BaseException:
            self._writer.close()
            raise
        #: Intents submitted by the last update() call.
        self.last_attempts = 0

    def __enter__(self) -> Agent:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release the agent name and stop following results (idempotent)."""
        self._writer.close()
        self._results.close()

    @property
    def last_seq(self) -> int:
        """The seq of the last intent in the agent's journal (0 if none)."""
        return self._writer.last_seq

    def append(
        self,
        file: str,
        patch: Any = UNSET,
        *,
        merge: Any = UNSET,
        if_version: int | None = None,
        id: str | None = None,
    ) -> int:
        """Append one intent on document file and return its seq. Give
        exactly one of patch (a list of RFC 6902 operations, plus
        {"op": "inc", "path": P, "value": N}) and merge (an RFC 7396 merge
        patch; merge=None makes the document null). if_version applies it
        only at that version (0: the document must not exist yet); id is an
        idempotency key echoed in the result. The intent is durable (written
        and fsynced) when append returns."""
        return self._writer.append(file, patch=patch, merge=merge, if_version=if_version, id=id)

    def wait(self, seq: int, timeout: float | None = 10.0) -> dict[str, Any]:
        """The result of intent seq, as a dict with the result line's fields
        (seq, id, file, status, version, commit, error), waiting up to
        timeout seconds (None: forever). Any status is returned; raises
        Timeout, or ResultGone if the result was deleted under the
        retention policy."""
        return self._results.wait(seq, timeout)

    def submit(
        self,
        file: str,
        patch: Any = UNSET,
        *,
        merge: Any = UNSET,
        if_version: int | None = None,
        id: str | None = None,
        timeout: float | None = 10.0,
    ) -> dict[str, Any]:
        """append() then wait(): the result of the intent, whatever its
        status ("applied", "conflict" or "rejected")."""
        seq = self.append(file, patch=patch, merge=merge, if_version=if_version, id=id)
        return self.wait(seq, timeout)

    def read(self, file: str, timeout: float = 10.0) -> tuple[int, Any]:
        """Document file with its version, as (version, data), read together:
        data is exactly what the watcher wrote as that version, parsed (None
        when the document does not exist). Raises Unversioned if the file on
        disk matches no committed version for timeout seconds."""
        return read_document(self.dir, file, timeout)

    def update(
        self,
        file: str,
        fn: UpdateFunc,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        *,
        timeout: float | None = 60.0,
        skip_if_version: bool = False,
        initial_delay: float = DEFAULT_INITIAL_DELAY,
        backoff_factor: float = DEFAULT_BACKOFF_FACTOR,
        max_delay: float = DEFAULT_MAX_DELAY,
    ) -> dict[str, Any] | None:
        """Change document file with fn, safely under contention (optimistic
        concurrency, as Go's journal.Updater): read the document with its
        version, call fn(data, version), submit what it returns with
        if_version set to that version, and on a conflict back off and start
        again from a fresh read.

        fn returns a list (a JSON patch), a dict (a merge patch) or None
        (nothing to do: update returns None without submitting anything). It
        is called again after each conflict, so it must compute the change
        from its arguments alone.

        The backoff after conflict n is a random duration in [0, c] (full
        jitter), c = initial_delay * backoff_factor**(n-1) capped at
        max_delay. Returns the applied result. Raises Conflict after
        max_attempts conflicting attempts, Rejected if the watcher rejects
        the intent, and Timeout when timeout seconds (the bound on the whole
        update, None for none) pass; a Timeout's seq, if set, is an intent
        the watcher will still decide. With skip_if_version, only patches
        that cannot lose an update are allowed (test and inc operations,
        and replace, remove, move and copy each after a test of its path
        or of a path above it) and go without if_version."""
        check_doc_name(file)
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise ValueError(f"stateward: max_attempts must be an integer >= 1, got {max_attempts!r}")
        if initial_delay < 0 or max_delay < initial_delay:
            raise ValueError(f"stateward: need 0 <= initial_delay <= max_delay, got {initial_delay} and {max_delay}")
        if not backoff_factor >= 1 or math.isinf(backoff_factor):
            raise ValueError(f"stateward: backoff_factor must be a number >= 1, got {backoff_factor}")
        deadline = None if timeout is None else time.monotonic() + timeout

        def left() -> float | None:
            return None if deadline is None else deadline - time.monotonic()

        self.last_attempts = 0
        attempt = 0
        while True:
            attempt += 1
            rem = left()
            if rem is not None and rem <= 0:
                raise Timeout(f"stateward: update {file}: no applied change in {timeout}s")
            version, data = read_document(self.dir, file, 10.0 if rem is None else rem)
            change = fn(data, version)
            if change is None:
                return None
            if isinstance(change, (list, tuple)):
                kw: dict[str, Any] = {"patch": list(change)}
            elif isinstance(change, dict):
                kw = {"merge": change}
            else:
                raise TypeError(
                    f"stateward: update {file}: the function must return a list (a JSON patch), "
                    f"a dict (a merge patch) or None, got {type(change).__name__}"
                )
            if skip_if_version:
                _check_safe(kw)
            else:
                kw["if_version"] = version
            seq = self.append(file, **kw)
            self.last_attempts = attempt
            res = self.wait(seq, left())
            status = res.get("status")
            if status == "applied":
                return res
            if status == "rejected":
                raise Rejected(f"stateward: rejected: {file} seq {seq}: {res.get('error', '')}", res, attempt)
            if status != "conflict":
                raise Rejected(f"stateward: update {file}: result of seq {seq} has unknown status {status!r}", res, attempt)
            if attempt >= max_attempts:
                raise Conflict(
                    f"stateward: conflict: {file}: {attempt} attempts, the last: {res.get('error', '')}", res, attempt
                )
            try:
                ceiling = min(initial_delay * backoff_factor ** (attempt - 1), max_delay)
            except OverflowError:
                ceiling = max_delay
            pause = random.uniform(0, ceiling)
            rem = left()
            if rem is not None and pause >= rem:
                raise Timeout(f"stateward: update {file}: no applied change in {timeout}s (backing off after conflict {attempt})")
            time.sleep(pause)


def _check_safe(kw: dict[str, Any]) -> None:
    """Raise ValueError unless the change cannot lose an update without
    if_version (as journal.Updater's SkipIfVersion): a patch of test and inc
    operations, and replace, remove, move and copy each after a test of its
    path (the target, for move and copy) or of a path above it."""
    if "merge" in kw:
        raise ValueError("stateward: patch is not safe without if_version: a merge patch overwrites what it names")
    tested: list[str] = []
    for i, op in enumerate(kw["patch"]):
        name = op.get("op") if isinstance(op, dict) else None
        path = op.get("path") if isinstance(op, dict) else None
        if name == "test":
            tested.append(path if isinstance(path, str) else "\0")
        elif name in ("replace", "remove", "move", "copy"):
            if not isinstance(path, str) or not any(t == path or t == "" or path.startswith(t + "/") for t in tested):
                what = "target" if name in ("move", "copy") else "path"
                raise ValueError(
                    f"stateward: patch is not safe without if_version: op {i} ({name} {path}) overwrites blindly: "
                    f"a test of its {what} {path!r}, or of a path above it, must come before it"
                )
        elif name != "inc":
            raise ValueError(
                f"stateward: patch is not safe without if_version: op {i} is {name!r}: "
                "only test, inc, and replace, remove, move and copy after a test of their path may go without if_version"
            )
