"""Following one agent's results, DIR/results/<agent>/ (Go:
journal/results.go).

Each look reads on in the open segment (one fstat), then, if the result is
not there, lists the folder (a new segment, a deleted one). Between two
looks it sleeps until inotify reports a change in the results folder (with
a safety poll every 0.25 s), or, without inotify (or before the watcher has
created the folder), polls with a short backoff.
"""

from __future__ import annotations

import os
import time
from typing import Any

from ._errors import ResultGone, Timeout
from ._format import (
    check_agent_name,
    complete_lines,
    list_segments,
    parse_result,
    result_seq,
    segment_name,
)
from ._inotify import Inotify, open_inotify

#: First and longest pause between two looks while waiting for a result.
#: A round trip through the watcher takes about ten milliseconds.
POLL_MIN = 0.0005
POLL_MAX = 0.02
#: With inotify, the longest sleep between two looks: a safety net for
#: events that do not come (file systems that do not report remote writes).
SAFETY_POLL = 0.25
#: How many results a follower keeps read ahead of the seq it waits for, for
#: the waits to come (Go: journal.DefaultMaxBuffered).
MAX_BUFFERED = 4096


class Results:
    """Follows one agent's results folder and hands out results by seq. Not
    safe for use from several threads at once.

    Results read while waiting for one seq are kept for later waits, at most
    max_buffered of them: past the bound, the results below the seq waited
    for go first, then the ones above it; a later wait for one that was let
    go reads the files again from the segment that holds it."""

    def __init__(self, dir: str, agent: str, inotify: bool = True) -> None:
        check_agent_name(agent)
        self.dir = dir
        self.agent = agent
        self.path = os.path.join(dir, "results", agent)
        self._seg = 0  # current segment (first seq), 0 before the first scan
        self._off = 0  # offset in it of the next unread line
        self._floor = 0  # lowest seq kept; results below it are dropped
        self._want = 0  # the seq the current wait is for
        self._above = 0  # highest seq let go above a wait's seq, 0 if none
        self.max_buffered = MAX_BUFFERED
        self._found: dict[int, dict[str, Any]] = {}
        self._fd: int | None = None  # segment _seg, kept open between scans
        self._oldest = 0  # first seq of the oldest segment at the last scan
        self._notify: Inotify | None = open_inotify() if inotify else None
        self._watching = False  # the results folder is watched
        self._watch()

    def _watch(self) -> None:
        """Watch the results folder once it exists."""
        if self._notify is not None and not self._watching:
            self._watching = self._notify.add(self.path)

    def close(self) -> None:
        self._close_segment()
        if self._notify is not None:
            self._notify.close()
            self._notify = None

    def _close_segment(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def wait(self, seq: int, timeout: float | None) -> dict[str, Any]:
        """The first result written for seq (the original, not a copy
        answering a retry), waiting for it up to timeout seconds (None:
        forever). Raises Timeout, or ResultGone for a result deleted under
        the retention policy."""
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
            raise ValueError(f"stateward: seq must be an integer >= 1, got {seq!r}")
        deadline = None if timeout is None else time.monotonic() + timeout
        if self.max_buffered < 1:
            raise ValueError(f"stateward: max_buffered must be >= 1, got {self.max_buffered}")
        if seq not in self._found and (self._seg == 0 or seq < self._floor or seq <= self._above):
            # Not read yet, or read and let go: read again from the segment
            # that holds it.
            self._close_segment()
            self._seg, self._off, self._floor, self._above = 0, 0, seq, 0
            self._found.clear()
        self._want = seq
        pause = POLL_MIN
        while True:
            # First read on in the open segment, the common case; list the
            # folder (a new segment? a deleted one?) only if that did not do.
            if self._fd is not None:
                self._read_segment()
            if seq not in self._found:
                self._scan()
            res = self._found.pop(seq, None)
            if res is not None:
                return res
            if self._oldest > seq:
                # Results are written in seq order and a segment is named by
                # its first: seq's result was in a segment since deleted.
                raise ResultGone(
                    f"stateward: result no longer retained: seq {seq} "
                    f"(the oldest results segment of {self.agent!r} starts at {self._oldest})"
                )
            left = SAFETY_POLL if self._watching else pause
            if deadline is not None:
                rem = deadline - time.monotonic()
                if rem <= 0:
                    raise Timeout(f"stateward: no result for seq {seq} of agent {self.agent!r} in {timeout}s", seq)
                left = min(left, rem)
            if self._notify is not None and self._watching:
                # The watch was in place before the look above: a result
                # written since then has queued an event.
                self._notify.wait(left)
            else:
                time.sleep(left)
                pause = min(pause * 2, POLL_MAX)
                self._watch()  # then look again before relying on events

    def _scan(self) -> None:
        """Read every complete result line past the current position."""
        segs = list_segments(self.path)
        if not segs:
            return
        self._oldest = segs[0]
        if self._seg == 0:
            # Start at the newest segment that begins at or before floor, and
            # whose first line is an original result: one that begins with a
            # retry copy (or a result without seq) is named by that line,
            # which may be lower than originals in the segments before it.
            i = 0
            for j, s in enumerate(segs):
                if s <= self._floor:
                    i = j
            while i > 0 and not self._starts_with_original(segs[i]):
                i -= 1
            self._seg, self._off = segs[i], 0
        for s in segs:
            if s < self._seg:
                continue
            if s > self._seg:
                self._close_segment()
                self._seg, self._off = s, 0
            if self._read_segment():
                return

    def _starts_with_original(self, seg: int) -> bool:
        """Whether the first line of segment seg is a complete result with a
        seq that does not answer a retry."""
        try:
            with open(os.path.join(self.path, segment_name(seg)), "rb") as f:
                line = f.readline()
        except OSError:
            return False
        if not line.endswith(b"\n"):
            return False
        res = parse_result(line)
        return res is not None and result_seq(res) > 0 and not res.get("retry")

    def _read_segment(self) -> bool:
        """Read the complete result lines of segment _seg past _off. Stop
        early, and return True, once holding the result waited for and
        max_buffered others."""
        p = os.path.join(self.path, segment_name(self._seg))
        if self._fd is None:
            try:
                self._fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                return False  # compacted away under us: the next listing moves on
        size = os.fstat(self._fd).st_size
        if size <= self._off:
            return False
        data = os.pread(self._fd, size - self._off, self._off)
        lines, n = complete_lines(data)
        pos = self._off
        found = self._found
        for line in lines:
            start, pos = pos, pos + len(line)
            res = parse_result(line)
            if res is None:
                continue
            s = result_seq(res)
            if s == 0 or s < self._floor or s in found:
                continue
            if s != self._want and len(found) >= self.max_buffered:
                if self._want in found:
                    # Enough read ahead: this line and the rest wait in the file.
                    self._off = start
                    return True
                # Make room: let go of the results below the one waited for
                # (a later wait for one reads again, its seq being below the
                # floor), then of this one (its seq being at or below above).
                if self._floor < self._want:
                    for k in [k for k in found if k < self._want]:
                        del found[k]
                    self._floor = self._want
                if s < self._floor:
                    continue
                if len(found) >= self.max_buffered:
                    self._above = max(self._above, s)
                    continue
            found[s] = res
        self._off += n
        return False
