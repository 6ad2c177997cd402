"""inotify through ctypes (standard library only), to wake a waiting agent
as soon as the watcher writes to its results folder. Where inotify cannot be
had (no libc symbol, the per-user instance limit reached) the caller polls.
"""

from __future__ import annotations

import ctypes
import os
import select

_IN_MODIFY = 0x00000002
_IN_CLOSE_WRITE = 0x00000008
_IN_MOVED_TO = 0x00000080
_IN_CREATE = 0x00000100
_IN_DELETE = 0x00000200
_IN_ONLYDIR = 0x01000000
_MASK = _IN_MODIFY | _IN_CLOSE_WRITE | _IN_MOVED_TO | _IN_CREATE | _IN_DELETE | _IN_ONLYDIR

_available = True
try:
    _libc = ctypes.CDLL(None, use_errno=True)
    _init1 = _libc.inotify_init1
    _add_watch = _libc.inotify_add_watch
    _init1.argtypes = [ctypes.c_int]
    _init1.restype = ctypes.c_int
    _add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    _add_watch.restype = ctypes.c_int
except (OSError, AttributeError):  # not glibc/musl on Linux
    _available = False


class Inotify:
    """One inotify instance watching folders for changes to their entries
    and to the files in them."""

    def __init__(self) -> None:
        if not _available:
            raise OSError("inotify is not available")
        fd: int = _init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))
        self.fd = fd

    def add(self, folder: str) -> bool:
        """Watch folder; False if it cannot be watched (it does not exist)."""
        wd: int = _add_watch(self.fd, os.fsencode(folder), _MASK)
        return wd >= 0

    def wait(self, timeout: float) -> None:
        """Return when an event came (draining the queue), or after timeout
        seconds."""
        # poll, not select: select cannot wait on a descriptor >= 1024
        # (FD_SETSIZE), which a process with many files open gets.
        p = select.poll()
        p.register(self.fd, select.POLLIN)
        if p.poll(max(0.0, timeout) * 1000.0):
            try:
                while os.read(self.fd, 1 << 16):
                    pass
            except BlockingIOError:
                pass

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def open_inotify() -> Inotify | None:
    """An Inotify, or None where there is none to be had."""
    try:
        return Inotify()
    except OSError:
        return None
