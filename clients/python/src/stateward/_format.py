"""Names, segment names and line parsing shared by the writer and the
results follower (docs/format.md; Go: journal/record.go, journal/reader.go)."""

from __future__ import annotations

import errno
import json
import os
import re
from typing import Any

#: Longest intent line, "\n" included, that the watcher accepts by default.
DEFAULT_MAX_LINE = 1 << 20
#: Longest idempotency key, in bytes.
MAX_ID_LEN = 128
#: Size past which a writer starts a new segment.
DEFAULT_SEGMENT_SIZE = 64 << 20
#: Permissions of what the client creates, before the umask.
DIR_MODE = 0o775
FILE_MODE = 0o664
#: The lock file inside an agent's journal folder; not a segment.
LOCK_NAME = ".lock"
#: The versions file under a state directory.
VERSIONS_PATH = os.path.join(".stateward", "versions.json")

_DOC_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}\.json")
_AGENT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SEGMENT_RE = re.compile(r"[0-9]{20}\.jsonl")
_MAX_UINT64 = (1 << 64) - 1


def check_doc_name(name: str) -> None:
    """Raise ValueError unless name is a valid document name."""
    if not isinstance(name, str) or not _DOC_RE.fullmatch(name) or ".." in name:
        raise ValueError(
            f"stateward: bad name: document {name!r} must match "
            r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\.json$ and contain no '..'"
        )


def check_agent_name(name: str) -> None:
    """Raise ValueError unless name is a valid agent name."""
    if not isinstance(name, str) or not _AGENT_RE.fullmatch(name) or ".." in name:
        raise ValueError(
            f"stateward: bad name: agent {name!r} must match "
            r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$ and contain no '..'"
        )


def segment_name(seq: int) -> str:
    """The file name of a segment whose first record has seq: 20 digits."""
    return f"{seq:020d}.jsonl"


def parse_segment_name(name: str) -> int | None:
    """The first seq of a segment file name, or None if it is not one."""
    if not _SEGMENT_RE.fullmatch(name):
        return None
    n = int(name[:20])
    return n if n <= _MAX_UINT64 else None


def list_segments(folder: str) -> list[int]:
    """The first seqs of the segments in folder, in order: regular files
    named as segments, nothing else. A missing folder has none."""
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return []
    segs = []
    for e in entries:
        n = parse_segment_name(e.name)
        if n is not None and e.is_file(follow_symlinks=False):
            segs.append(n)
    segs.sort()
    return segs


def sync_dir(path: str) -> None:
    """fsync a folder, making the entries created or renamed in it durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def mkdir_durable(path: str) -> None:
    """Create path and any missing parents with DIR_MODE, fsyncing each parent
    whose entries changed (Go: mkdirDurable)."""
    if os.path.lexists(path):
        if not os.path.isdir(path):
            raise NotADirectoryError(errno.ENOTDIR, "create folder: not a directory", path)
        return
    parent = os.path.dirname(path.rstrip("/")) or "."
    if parent != path:
        mkdir_durable(parent)
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        pass
    sync_dir(parent)


def peek_seq(line: bytes) -> int:
    """The seq of a journal line as the watcher reads it, whether or not the
    rest of the line is valid; 0 when it has no readable seq (Go: peekSeq).

    The line must be valid JSON and an object; seq must be an integer written
    without fraction or exponent, in 1..2^64-1."""
    try:
        obj = json.loads(line.decode("utf-8", "replace"))
    except ValueError:
        return 0
    if not isinstance(obj, dict):
        return 0
    seq = obj.get("seq")
    if isinstance(seq, bool) or not isinstance(seq, int) or not 1 <= seq <= _MAX_UINT64:
        return 0
    return seq


def complete_lines(data: bytes) -> tuple[list[bytes], int]:
    """Split data into its complete lines (each with its "\\n") and return
    them with the length they cover; a final line without "\\n" is not
    written yet and is left out."""
    end = data.rfind(b"\n") + 1
    if end == 0:
        return [], 0
    return [part + b"\n" for part in data[: end - 1].split(b"\n")], end


def parse_result(line: bytes) -> dict[str, Any] | None:
    """A results line as a dict, or None if it is not a result."""
    try:
        res = json.loads(line.decode("utf-8", "replace"))
    except ValueError:
        return None
    if not isinstance(res, dict) or not isinstance(res.get("status"), str) or not res["status"]:
        return None
    return res


def result_seq(res: dict[str, Any]) -> int:
    """The seq of a result, 0 if it has none."""
    seq = res.get("seq", 0)
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        return 0
    return seq
