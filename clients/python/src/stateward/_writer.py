"""One agent's journal writer (Go: journal/writer.go).

Opening takes the agent's writer lock, the same two locks as the Go and
TypeScript writers: an abstract Unix socket named after the journal folder's
device and inode, and flock on journal/<agent>/.lock. It then cuts a torn
tail and continues seq after the last complete record. Each append is one
write(2) on an O_APPEND file followed by fsync; a new segment's folder entry
is fsynced before anything is written to it.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import threading
import time
from typing import Any

from ._errors import Closed, SeqExhausted, WriterBusy
from ._format import (
    DEFAULT_MAX_LINE,
    DEFAULT_SEGMENT_SIZE,
    FILE_MODE,
    LOCK_NAME,
    MAX_ID_LEN,
    check_agent_name,
    check_doc_name,
    complete_lines,
    list_segments,
    mkdir_durable,
    peek_seq,
    segment_name,
    sync_dir,
)

#: The largest seq (2^64-1); a seq never wraps.
MAX_SEQ = (1 << 64) - 1

#: Marks an argument that was not given (None is a valid merge patch).
UNSET: Any = object()


#: The size of sun_path in Linux's sockaddr_un. A writer's abstract socket
#: name is padded with NUL bytes to fill it: Node binds the whole sun_path
#: whatever name it is given, so every client binds the same 108 bytes.
SUN_PATH_LEN = 108


def lock_socket_name(folder: str) -> bytes:
    """The abstract socket name that holds the writer lock of the journal
    folder: "\\0stateward-writer/<st_dev>/<st_ino>" padded with NUL bytes to
    SUN_PATH_LEN (docs/format.md, "Writers"; Go: journal.WriterAddress)."""
    st = os.stat(folder)
    name = b"\0stateward-writer/%d/%d" % (st.st_dev, st.st_ino)
    return name.ljust(SUN_PATH_LEN, b"\0")


class WriterLock:
    """The writer lock of one agent's journal folder: the abstract socket
    and flock on its .lock file, both released by release() or by the death
    of the process."""

    def __init__(self, folder: str, agent: str) -> None:
        self.folder = folder
        self._sock: socket.socket | None = None
        self._fd: int | None = None
        lock_path = os.path.join(folder, LOCK_NAME)
        fd = os.open(lock_path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        try:
            name = lock_socket_name(folder)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            try:
                sock.bind(name)
                sock.listen(1)
            except OSError as e:
                sock.close()
                if e.errno == errno.EADDRINUSE:
                    shown = name[1:].rstrip(b"\0").decode()
                    raise WriterBusy(
                        f"stateward: agent {agent!r} is held by another writer "
                        f"(socket @{shown} is bound; journal {folder})"
                    ) from None
                raise
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                sock.close()
                raise WriterBusy(
                    f"stateward: agent {agent!r} is held by another writer "
                    f"(flock on {lock_path} is taken)"
                ) from None
            except BaseException:
                sock.close()
                raise
        except BaseException:
            os.close(fd)
            raise
        self._sock, self._fd = sock, fd

    def release(self) -> None:
        """Release both locks (idempotent)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor releases the flock
            self._fd = None


def acquire_lock(folder: str, agent: str, timeout: float) -> WriterLock:
    """Take the writer lock, retrying every 20 ms for up to timeout seconds
    (0: one try)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return WriterLock(folder, agent)
        except WriterBusy:
            if time.monotonic() >= deadline:
                raise
        time.sleep(min(0.02, max(0.0, deadline - time.monotonic())))


def now_rfc3339() -> str:
    """The current UTC time in RFC 3339 with microseconds."""
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%06dZ" % (int(t * 1e6) % 1_000_000)


def encode_intent(
    seq: int,
    file: str,
    patch: Any = UNSET,
    merge: Any = UNSET,
    if_version: int | None = None,
    id: str | None = None,
    time_: str | None = None,
) -> bytes:
    """One journal line, "\\n" included, with the fields in the order Go's
    journal.Intent writes them. Raises ValueError for an intent the watcher
    would reject."""
    check_doc_name(file)
    if (patch is UNSET) == (merge is UNSET):
        raise ValueError("stateward: bad record: exactly one of patch and merge is required")
    if patch is not UNSET and not isinstance(patch, (list, tuple)):
        raise ValueError("stateward: bad record: patch must be a list of operations (use merge= for a merge patch)")
    if if_version is not None and (isinstance(if_version, bool) or not isinstance(if_version, int) or if_version < 0):
        raise ValueError(f"stateward: bad record: if_version must be an integer >= 0, got {if_version!r}")
    rec: dict[str, Any] = {"seq": seq, "file": file}
    if patch is not UNSET:
        rec["patch"] = list(patch)
    else:
        rec["merge"] = merge
    if if_version is not None:
        rec["if_version"] = if_version
    if id is not None and id != "":
        if not isinstance(id, str):
            raise ValueError("stateward: bad record: id must be a string")
        try:
            n = len(id.encode("utf-8"))
        except UnicodeEncodeError:
            raise ValueError("stateward: bad record: id is not valid UTF-8") from None
        if n > MAX_ID_LEN:
            raise ValueError(f"stateward: bad record: id is {n} bytes, longer than {MAX_ID_LEN}")
        rec["id"] = id
    if time_:
        rec["time"] = time_
    try:
        text = json.dumps(rec, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        return text.encode("utf-8") + b"\n"
    except (TypeError, ValueError, UnicodeEncodeError) as e:
        raise ValueError(f"stateward: bad record: encode: {e}") from None


class Writer:
    """Appends intents to one agent's journal, DIR/journal/<agent>/. One
    Writer per agent may be open at a time, across processes and languages.
    Safe for use from several threads."""

    def __init__(
        self,
        dir: str,
        agent: str,
        *,
        segment_size: int = DEFAULT_SEGMENT_SIZE,
        max_line: int = DEFAULT_MAX_LINE,
        lock_timeout: float = 0.0,
    ) -> None:
        check_agent_name(agent)
        if segment_size <= 0:
            raise ValueError(f"stateward: segment size must be > 0, got {segment_size}")
        self.dir = dir
        self.agent = agent
        self.path = os.path.join(dir, "journal", agent)
        self.segment_size = segment_size
        self.max_line = max_line
        self._mu = threading.Lock()  # guards the fields below
        self._fd: int | None = None  # newest segment, O_APPEND
        self._size = 0
        self._last_seq = 0
        self._next_min = 1  # lowest seq allowed next (an empty newest segment names it)
        self._closed = False
        mkdir_durable(self.path)
        self._lock: WriterLock | None = acquire_lock(self.path, agent, lock_timeout)
        try:
            self._recover()
        except BaseException:
            self._fail()
            raise

    def _recover(self) -> None:
        """Find the newest segment, cut a torn tail, read the last seq."""
        segs = list_segments(self.path)
        for i in range(len(segs) - 1, -1, -1):
            p = os.path.join(self.path, segment_name(segs[i]))
            newest = i == len(segs) - 1
            fd = os.open(p, (os.O_RDWR | os.O_APPEND if newest else os.O_RDONLY) | os.O_CLOEXEC)
            try:
                end, seq = _last_seq(fd)
                if newest:
                    if os.fstat(fd).st_size > end:
                        # A torn tail: its append never returned, so nobody
                        # was told it was written. Cut it before writing on.
                        os.ftruncate(fd, end)
                        os.fsync(fd)
                    self._fd, self._size, self._next_min = fd, end, segs[i]
                    fd = -1
            finally:
                if fd >= 0:
                    os.close(fd)
            if seq > 0:
                self._last_seq = seq
                return

    @property
    def last_seq(self) -> int:
        """The seq of the last record in the journal (0 if none)."""
        with self._mu:
            return self._last_seq

    def append(
        self,
        file: str,
        *,
        patch: Any = UNSET,
        merge: Any = UNSET,
        if_version: int | None = None,
        id: str | None = None,
    ) -> int:
        """Write one intent with the next seq as one line, fsync it, and
        return its seq. When it returns, the intent is durable. A failed
        write or fsync closes the Writer."""
        with self._mu:
            if self._closed or self._lock is None:
                raise Closed(f"stateward: writer of agent {self.agent!r} is closed")
            if self._last_seq >= MAX_SEQ:
                raise SeqExhausted(
                    f"stateward: no seq left: the journal of agent {self.agent!r} reached seq {MAX_SEQ}, "
                    "the largest there is: write as a new agent"
                )
            seq = max(self._last_seq + 1, self._next_min)
            line = encode_intent(seq, file, patch, merge, if_version, id, now_rfc3339())
            if len(line) > self.max_line:
                raise ValueError(
                    f"stateward: bad record: line of {len(line)} bytes is longer than "
                    f"the limit of {self.max_line} (the watcher would reject it)"
                )
            if self._fd is None or (self._size > 0 and self._size + len(line) > self.segment_size):
                self._rotate(seq)
            assert self._fd is not None
            try:
                view = memoryview(line)
                while view:
                    n = os.write(self._fd, view)
                    self._size += n
                    view = view[n:]
                os.fsync(self._fd)
            except OSError:
                self._fail()
                raise
            self._last_seq = seq
            return seq

    def _rotate(self, first: int) -> None:
        """Start a new segment whose first record has seq first, and make its
        folder entry durable before anything is written to it."""
        p = os.path.join(self.path, segment_name(first))
        fd = os.open(p, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
        try:
            sync_dir(self.path)
        except OSError:
            os.close(fd)
            self._fail()
            raise
        if self._fd is not None:
            os.close(self._fd)
        self._fd, self._size, self._next_min = fd, 0, first

    def _fail(self) -> None:
        """Close after an error that leaves the tail unknown."""
        self._closed = True
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def close(self) -> None:
        """Release the journal (idempotent)."""
        with self._mu:
            self._fail()


def _last_seq(fd: int) -> tuple[int, int]:
    """Scan a whole segment: the offset just past its last complete line, and
    the highest readable seq in it (0 if none)."""
    end = 0
    seq = 0
    carry = b""
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return end, seq
        data = carry + chunk
        lines, n = complete_lines(data)
        for line in lines:
            s = peek_seq(line)
            if s > seq:
                seq = s
        end += n
        carry = data[n:]
