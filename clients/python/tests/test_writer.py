"""The journal writer, without a watcher: names, line format, torn tails,
seq continuation, rotation, validation."""

from __future__ import annotations

import json
import os
import re
from datetime import datetime
from pathlib import Path

import pytest

import stateward

SEG1 = "00000000000000000001.jsonl"


def lines(path: Path) -> list[bytes]:
    data = path.read_bytes()
    assert data.endswith(b"\n")
    return data.split(b"\n")[:-1]


def test_append_line_format(tmp_path: Path) -> None:
    with stateward.open(str(tmp_path), agent="planner") as a:
        assert a.append("tasks.json", patch=[{"op": "add", "path": "", "value": {"é": 1}}], if_version=0, id="k-1") == 1
        assert a.append("tasks.json", merge={"a": None}) == 2
        assert a.append("tasks.json", merge=None) == 3
    folder = tmp_path / "journal" / "planner"
    assert sorted(os.listdir(folder)) == [".lock", SEG1]
    got = lines(folder / SEG1)
    first = json.loads(got[0])
    assert list(first) == ["seq", "file", "patch", "if_version", "id", "time"]
    assert got[0].startswith(
        '{"seq":1,"file":"tasks.json","patch":[{"op":"add","path":"","value":{"é":1}}],"if_version":0,"id":"k-1","time":"'.encode()
    )
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", first["time"])
    datetime.fromisoformat(first["time"].replace("Z", "+00:00"))
    assert json.loads(got[1])["merge"] == {"a": None}
    assert b'"merge":null' in got[2]


def test_torn_tail_cut_and_seq_continues(tmp_path: Path) -> None:
    with stateward.open(str(tmp_path), agent="a") as a:
        for _ in range(3):
            a.append("x.json", merge={"k": 1})
    seg = tmp_path / "journal" / "a" / SEG1
    whole = seg.read_bytes()
    with open(seg, "ab") as f:
        f.write(b'{"seq":4,"file":"x.json","merge":{"k"')  # killed mid-append
    with stateward.open(str(tmp_path), agent="a") as a:
        assert a.last_seq == 3
        assert seg.read_bytes() == whole, "torn tail not cut"
        assert a.append("x.json", merge={"k": 2}) == 4
    assert [json.loads(l)["seq"] for l in lines(seg)] == [1, 2, 3, 4]


def test_seq_after_gaps_and_unreadable_lines(tmp_path: Path) -> None:
    folder = tmp_path / "journal" / "a"
    folder.mkdir(parents=True)
    # Highest readable seq wins, whatever the rest of the line; lines without
    # a readable seq (not JSON, seq as a string, 1.0, true) do not count.
    (folder / SEG1).write_bytes(
        b'{"seq":7,"file":"bad name"}\n'
        b'{"seq":"9","file":"x.json","merge":1}\n'
        b'{"seq":9.0}\n{"seq":true}\nnot json\n'
        b'{"se\\u0071":5}\n'
    )
    with stateward.open(str(tmp_path), agent="a") as a:
        assert a.last_seq == 7
        assert a.append("x.json", merge=1) == 8


def test_empty_newest_segment_names_next_seq(tmp_path: Path) -> None:
    folder = tmp_path / "journal" / "a"
    folder.mkdir(parents=True)
    (folder / SEG1).write_bytes(b'{"seq":1,"file":"x.json","merge":1}\n{"seq":2,"file":"x.json","merge":1}\n')
    (folder / stateward.segment_name(10)).write_bytes(b"")
    (folder / "00000000000000000020.jsonl.tmp").write_bytes(b'{"seq":99}\n')  # not a segment
    with stateward.open(str(tmp_path), agent="a") as a:
        assert a.last_seq == 2
        assert a.append("x.json", merge=1) == 10
    assert lines(folder / stateward.segment_name(10))[0].startswith(b'{"seq":10,')


def test_newest_segment_without_seq_continues_older(tmp_path: Path) -> None:
    folder = tmp_path / "journal" / "a"
    folder.mkdir(parents=True)
    (folder / SEG1).write_bytes(b'{"seq":1,"file":"x.json","merge":1}\n{"seq":5,"file":"x.json","merge":1}\n')
    (folder / stateward.segment_name(3)).write_bytes(b"garbage\n{\"seq\":6,")  # no readable seq, torn
    with stateward.open(str(tmp_path), agent="a") as a:
        assert a.last_seq == 5
        assert a.append("x.json", merge=1) == 6
    got = lines(folder / stateward.segment_name(3))
    assert len(got) == 2 and got[0] == b"garbage" and json.loads(got[1])["seq"] == 6


def test_rotation(tmp_path: Path) -> None:
    with stateward.open(str(tmp_path), agent="a", segment_size=200) as a:
        for _ in range(10):
            a.append("x.json", merge={"k": "v" * 40})
    folder = tmp_path / "journal" / "a"
    segs = sorted(n for n in os.listdir(folder) if n.endswith(".jsonl"))
    assert len(segs) > 2
    seqs = []
    for s in segs:
        got = [json.loads(l)["seq"] for l in lines(folder / s)]
        assert int(s[:20]) == got[0], f"{s} starts with seq {got[0]}"
        assert len(s) == 26
        seqs += got
    assert seqs == list(range(1, 11))
    with stateward.open(str(tmp_path), agent="a", segment_size=200) as a:
        assert a.last_seq == 10


def test_creates_folders(tmp_path: Path) -> None:
    d = tmp_path / "new" / "state"
    with stateward.open(str(d), agent="a") as a:
        a.append("x.json", merge=1)
    assert (d / "journal" / "a" / ".lock").is_file()
    assert (d / "journal" / "a" / SEG1).is_file()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"file": "../x.json", "merge": 1},
        {"file": "x.txt", "merge": 1},
        {"file": ".x.json", "merge": 1},
        {"file": "x.json"},
        {"file": "x.json", "merge": 1, "patch": []},
        {"file": "x.json", "patch": {"op": "add"}},
        {"file": "x.json", "merge": 1, "id": "x" * 129},
        {"file": "x.json", "merge": 1, "id": "\ud800"},
        {"file": "x.json", "merge": float("nan")},
        {"file": "x.json", "merge": 1, "if_version": -1},
        {"file": "x.json", "merge": 1, "if_version": True},
        {"file": "x.json", "merge": "x" * (1 << 20)},
    ],
)
def test_invalid_intents_are_not_written(tmp_path: Path, kwargs: dict) -> None:
    with stateward.open(str(tmp_path), agent="a") as a:
        file = kwargs.pop("file")
        with pytest.raises(ValueError):
            a.append(file, **kwargs)
        assert a.append("x.json", merge=1) == 1  # nothing was written, seq not used
    assert len(lines(tmp_path / "journal" / "a" / SEG1)) == 1


@pytest.mark.parametrize("name", ["", "-a", "a/b", "a..b", "x" * 65, ".lock"])
def test_bad_agent_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError):
        stateward.open(str(tmp_path), agent=name)


def test_closed(tmp_path: Path) -> None:
    a = stateward.open(str(tmp_path), agent="a")
    a.close()
    a.close()
    with pytest.raises(stateward.Closed):
        a.append("x.json", merge=1)


def test_star_import_keeps_builtin_open() -> None:
    ns: dict = {}
    exec("from stateward import *", ns)
    assert "open" not in ns and "WriterBusy" in ns and "Conflict" in ns
    assert callable(stateward.open)


def test_path_and_positional_patch(tmp_path: Path) -> None:
    with stateward.open(tmp_path, "a") as a:  # a pathlib.Path, the agent positional
        assert a.dir == str(tmp_path)
        assert a.append("x.json", [{"op": "add", "path": "", "value": 1}]) == 1
    assert stateward.read_document(tmp_path, "x.json") == (0, None)


def test_folder_fsyncs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each new folder's parent, and the journal folder when a segment is
    created, are fsynced before anything depends on them."""
    import stateward._format
    import stateward._writer

    synced: list[str] = []
    real = stateward._format.sync_dir

    def record(path: str) -> None:
        synced.append(path)
        real(path)

    monkeypatch.setattr(stateward._format, "sync_dir", record)
    monkeypatch.setattr(stateward._writer, "sync_dir", record)
    with stateward.open(str(tmp_path), agent="a", segment_size=100) as a:
        assert synced == [str(tmp_path), str(tmp_path / "journal")]
        a.append("x.json", merge={"k": "v" * 60})
        assert synced[2:] == [str(tmp_path / "journal" / "a")]  # the first segment's entry
        a.append("x.json", merge={"k": "v" * 60})
        assert synced[3:] == [str(tmp_path / "journal" / "a")]  # and the second's


@pytest.mark.parametrize("fault", ["fsync", "sync_dir"])
def test_failed_fsync_closes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: str) -> None:
    """After a failed fsync (of the segment, or of the folder holding a new
    segment) the writer closes and lets go of the agent; the next open
    repairs the tail."""
    import stateward._writer

    a = stateward.open(str(tmp_path), agent="a")
    if fault == "fsync":
        a.append("x.json", merge=1)  # the segment exists: the next append fsyncs it

    def fail(*args: object) -> None:
        raise OSError(5, "injected EIO")

    if fault == "fsync":
        monkeypatch.setattr(stateward._writer.os, "fsync", fail)
    else:
        monkeypatch.setattr(stateward._writer, "sync_dir", fail)
    with pytest.raises(OSError, match="injected"):
        a.append("x.json", merge=2)
    monkeypatch.undo()
    with pytest.raises(stateward.Closed):
        a.append("x.json", merge=3)
    with stateward.open(str(tmp_path), agent="a") as b:  # released
        seq = b.append("x.json", merge=4)
    assert seq == (3 if fault == "fsync" else 1)  # the unacknowledged line may be there: seq moves past it


def test_update_timeout_names_the_pending_intent(tmp_path: Path) -> None:
    """No watcher: update appends its intent, then gives up waiting; the
    Timeout names the seq, which a watcher will still decide."""
    with stateward.open(tmp_path, "a") as a:
        with pytest.raises(stateward.Timeout) as e:
            a.update("x.json", lambda data, version: {"n": 1}, timeout=0.2)
        assert e.value.seq == 1 and a.last_attempts == 1
        assert b'"if_version":0' in (tmp_path / "journal" / "a" / SEG1).read_bytes()


def test_seq_never_wraps(tmp_path: Path) -> None:
    folder = tmp_path / "journal" / "a"
    folder.mkdir(parents=True)
    (folder / SEG1).write_bytes(b'{"seq":18446744073709551614,"file":"x.json","merge":1}\n')
    with stateward.open(tmp_path, "a") as a:
        assert a.append("x.json", merge=1) == 2**64 - 1
        with pytest.raises(stateward.SeqExhausted):
            a.append("x.json", merge=1)
    assert len(lines(folder / SEG1)) == 2
