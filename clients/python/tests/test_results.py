"""Following results written by hand, as the watcher writes them: segments,
retry copies, torn lines, deleted segments."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import stateward


@pytest.fixture(params=[True, False], ids=["inotify", "poll"])
def notify(request: pytest.FixtureRequest) -> bool:
    """Wait on inotify events, or by polling only."""
    return bool(request.param)


def res(seq: int, **kw: Any) -> bytes:
    r = {"seq": seq, "file": "x.json", "status": "applied", "version": seq, "commit": seq, **kw}
    return json.dumps(r, separators=(",", ":")).encode() + b"\n"


def write_results(dir: Path, agent: str, segs: dict[int, bytes]) -> None:
    folder = dir / "results" / agent
    folder.mkdir(parents=True, exist_ok=True)
    for first, data in segs.items():
        (folder / stateward.segment_name(first)).write_bytes(data)


def test_wait_across_segments(tmp_path: Path, notify: bool) -> None:
    write_results(tmp_path, "a", {1: res(1) + res(2), 3: res(3) + res(4, retry=True)})
    with stateward.open(str(tmp_path), agent="a", inotify=notify) as a:
        assert a.wait(2, timeout=1) == json.loads(res(2))
        assert a.wait(1, timeout=1)["seq"] == 1  # an earlier seq: starts over
        assert a.wait(3, timeout=1)["status"] == "applied"
        write_results(tmp_path, "a", {5: res(5)})
        assert a.wait(5, timeout=1)["commit"] == 5


def test_first_result_wins(tmp_path: Path, notify: bool) -> None:
    write_results(tmp_path, "a", {1: res(1) + res(1, retry=True, commit=99)})
    with stateward.open(str(tmp_path), agent="a", inotify=notify) as a:
        r = a.wait(1, timeout=1)
        assert "retry" not in r and r["commit"] == 1


def test_segment_starting_with_retry_copy(tmp_path: Path, notify: bool) -> None:
    # Segment 3 begins with a retry copy of seq 3; seq 4's original is in
    # segment 1, which a follower starting at "the newest segment at or
    # before 4" must go back to.
    write_results(tmp_path, "a", {1: res(1) + res(2) + res(3) + res(4) + res(5), 3: res(3, retry=True) + res(6)})
    with stateward.open(str(tmp_path), agent="a", inotify=notify) as a:
        assert a.wait(4, timeout=1)["seq"] == 4
        assert a.wait(6, timeout=1)["seq"] == 6


def test_torn_line_waits_for_its_end(tmp_path: Path, notify: bool) -> None:
    line = res(1)
    write_results(tmp_path, "a", {1: line[:10]})
    with stateward.open(str(tmp_path), agent="a", inotify=notify) as a:
        with pytest.raises(stateward.Timeout) as e:
            a.wait(1, timeout=0.05)
        assert isinstance(e.value, TimeoutError) and e.value.seq == 1
        with open(tmp_path / "results" / "a" / stateward.segment_name(1), "ab") as f:
            f.write(line[10:])
        assert a.wait(1, timeout=1)["seq"] == 1


def test_result_written_while_waiting(tmp_path: Path, notify: bool) -> None:
    with stateward.open(str(tmp_path), agent="a", inotify=notify) as a:
        t = threading.Timer(0.05, write_results, (tmp_path, "a", {1: res(1)}))
        t.start()
        assert a.wait(1, timeout=10)["seq"] == 1
        t.join()


def test_result_gone(tmp_path: Path, notify: bool) -> None:
    write_results(tmp_path, "a", {1: res(1) + res(2), 3: res(3) + res(4)})
    with stateward.open(str(tmp_path), agent="a", inotify=notify) as a:
        os.remove(tmp_path / "results" / "a" / stateward.segment_name(1))
        with pytest.raises(stateward.ResultGone):
            a.wait(2, timeout=1)
        assert a.wait(4, timeout=1)["seq"] == 4


def test_rejected_line_without_seq_skipped(tmp_path: Path, notify: bool) -> None:
    bad = b'{"status":"rejected","version":0,"commit":1,"error":"x","segment":"00000000000000000001.jsonl","offset":0}\n'
    write_results(tmp_path, "a", {1: bad + b"not json\n" + res(1)})
    with stateward.open(str(tmp_path), agent="a", inotify=notify) as a:
        assert a.wait(1, timeout=1)["status"] == "applied"


def test_bad_seq(tmp_path: Path, notify: bool) -> None:
    with stateward.open(str(tmp_path), agent="a", inotify=notify) as a:
        for seq in (0, -1, True, 1.5):
            with pytest.raises(ValueError):
                a.wait(seq, timeout=0)  # type: ignore[arg-type]


def test_inotify_waits_on_a_descriptor_above_1024(tmp_path: Path) -> None:
    """The inotify descriptor of a process with many files open is above
    1024 (FD_SETSIZE), where select.select raises ValueError: waiting on it
    must still time out and still wake on an event."""
    import resource

    from stateward._inotify import open_inotify

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2048:
        if hard != resource.RLIM_INFINITY and hard < 2048:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is below 2048")
        resource.setrlimit(resource.RLIMIT_NOFILE, (2048, hard))
    ino = open_inotify()
    assert ino is not None, "no inotify on this machine"
    try:
        high = 1500
        while True:
            try:
                os.fstat(high)
                high += 1
            except OSError:
                break
        os.dup2(ino.fd, high, inheritable=False)
        os.close(ino.fd)
        ino.fd = high
        assert ino.add(str(tmp_path))
        ino.wait(0.01)  # nothing yet: times out
        threading.Timer(0.05, (tmp_path / "x").write_bytes, (b"1",)).start()
        start = time.monotonic()
        ino.wait(10)
        assert time.monotonic() - start < 5, "not woken by inotify"
    finally:
        ino.close()
        if soft < 2048:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_inotify_wakes_the_waiter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With inotify the waiter sleeps until the watcher writes: with the
    safety poll pushed out of reach, only an event can wake it in time,
    whether the results folder existed when it began waiting or not."""
    import stateward._results

    monkeypatch.setattr(stateward._results, "SAFETY_POLL", 3600.0)
    with stateward.open(str(tmp_path), agent="a") as a:
        assert a._results._notify is not None, "no inotify on this machine"
        t = threading.Timer(0.05, write_results, (tmp_path, "a", {1: res(1)}))
        t.start()
        start = time.monotonic()
        assert a.wait(1, timeout=10)["seq"] == 1  # the folder appeared while waiting
        assert time.monotonic() - start < 5, "not woken by inotify"
        t.join()
        assert a._results._watching
        t = threading.Timer(0.05, lambda: open(tmp_path / "results" / "a" / stateward.segment_name(1), "ab").write(res(2)))
        t.start()
        start = time.monotonic()
        assert a.wait(2, timeout=10)["seq"] == 2  # appended to the open segment
        assert time.monotonic() - start < 5, "not woken by inotify"
        t.join()
        t = threading.Timer(0.05, write_results, (tmp_path, "a", {3: res(3)}))
        t.start()
        start = time.monotonic()
        assert a.wait(3, timeout=10)["seq"] == 3  # a new segment
        assert time.monotonic() - start < 5, "not woken by inotify"
        t.join()


def test_bounded_read_ahead(tmp_path: Path, notify: bool) -> None:
    """At most max_buffered results are kept read ahead, whatever the order
    of the waits (in order, fire and forget, shuffled, one that never
    comes); a result let go is read again when waited for. (As in Go, each
    result is handed out once.)"""
    import random

    write_results(tmp_path, "a", {1: b"".join(res(s) for s in range(1, 12)), 12: b"".join(res(s) for s in range(12, 21))})
    shuffled = list(range(1, 21))
    random.Random(8).shuffle(shuffled)
    for order in (list(range(1, 21)), [20, 5, 1, 19, 12, 11], shuffled, [21, 3, 4]):
        with stateward.open(str(tmp_path), agent="a", inotify=notify) as a:
            r = a._results
            r.max_buffered = 3
            for seq in order:
                if seq == 21:  # never comes, behind 20 that do
                    with pytest.raises(stateward.Timeout):
                        a.wait(seq, timeout=0.05)
                else:
                    assert a.wait(seq, timeout=1) == json.loads(res(seq))
                assert len(r._found) <= r.max_buffered


def test_bounded_behind_a_missing_result(tmp_path: Path, notify: bool) -> None:
    """Waiting for a result that never comes, with many after it: those
    past the bound are let go, and read again when waited for."""
    write_results(tmp_path, "a", {1: b"".join(res(s) for s in range(1, 21) if s != 5)})
    with stateward.open(str(tmp_path), agent="a", inotify=notify) as a:
        a._results.max_buffered = 3
        with pytest.raises(stateward.Timeout):
            a.wait(5, timeout=0.05)
        assert len(a._results._found) <= 3
        for seq in (10, 6, 20, 7):
            assert a.wait(seq, timeout=1)["seq"] == seq
            assert len(a._results._found) <= 3
