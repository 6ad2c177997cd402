"""One writer per agent name: the abstract socket and the flock, each
enough on its own to refuse a second writer, both released on close and on
process death."""

from __future__ import annotations

import fcntl
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

import stateward
from conftest import agent_cmd, agent_env


def abstract_names() -> set[str]:
    """The abstract Unix socket names bound in this network namespace."""
    names = set()
    with open("/proc/net/unix") as f:
        next(f)
        for line in f:
            parts = line.split()
            if len(parts) >= 8 and parts[7].startswith("@"):
                names.add(parts[7])
    return names


def test_second_writer_refused(tmp_path: Path) -> None:
    with stateward.open(str(tmp_path), agent="planner"):
        with pytest.raises(stateward.WriterBusy) as e:
            stateward.open(str(tmp_path), agent="planner")
        assert "planner" in str(e.value)
        assert str(tmp_path / "journal" / "planner") in str(e.value)
        with stateward.open(str(tmp_path), agent="other"):  # another name is another lock
            pass
    with stateward.open(str(tmp_path), agent="planner") as a:  # released on close
        a.append("x.json", merge=1)


def proc_name(name: bytes) -> str:
    """An abstract name as /proc/net/unix shows it: each NUL as "@"."""
    return name.decode().replace("\0", "@")


def test_socket_name(tmp_path: Path) -> None:
    folder = tmp_path / "journal" / "a"
    with stateward.open(str(tmp_path), agent="a"):
        st = os.stat(folder)
        name = f"\0stateward-writer/{st.st_dev}/{st.st_ino}".encode()
        want = name + b"\0" * (108 - len(name))  # the whole sun_path, as Node binds it
        assert stateward.lock_socket_name(str(folder)) == want
        assert proc_name(want) in abstract_names()
    assert proc_name(want) not in abstract_names()


def test_socket_alone_refuses(tmp_path: Path) -> None:
    """A writer that can only bind the socket (Node) keeps Python out."""
    folder = tmp_path / "journal" / "a"
    folder.mkdir(parents=True)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(stateward.lock_socket_name(str(folder)))
    s.listen(1)
    try:
        with pytest.raises(stateward.WriterBusy, match="socket"):
            stateward.open(str(tmp_path), agent="a")
        # Refused before anything was touched: the flock is free.
        fd = os.open(folder / ".lock", os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(fd)
    finally:
        s.close()
    with stateward.open(str(tmp_path), agent="a"):
        pass


def test_flock_alone_refuses(tmp_path: Path) -> None:
    """A writer that holds only the flock (flock(1) in a shell, or another
    network namespace) keeps Python out, and Python lets go of the socket."""
    folder = tmp_path / "journal" / "a"
    folder.mkdir(parents=True)
    fd = os.open(folder / ".lock", os.O_RDONLY | os.O_CREAT, 0o664)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        with pytest.raises(stateward.WriterBusy, match="flock"):
            stateward.open(str(tmp_path), agent="a")
        assert proc_name(stateward.lock_socket_name(str(folder))) not in abstract_names()
    finally:
        os.close(fd)
    with stateward.open(str(tmp_path), agent="a"):
        pass


def test_flock_1_refuses(tmp_path: Path) -> None:
    """flock(1), as a shell writer would use it."""
    folder = tmp_path / "journal" / "a"
    folder.mkdir(parents=True)
    p = subprocess.Popen(["flock", str(folder / ".lock"), "sh", "-c", "echo held; exec cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert p.stdout is not None and p.stdout.readline() == b"held\n"
        with pytest.raises(stateward.WriterBusy):
            stateward.open(str(tmp_path), agent="a")
    finally:
        assert p.stdin is not None
        p.stdin.close()
        p.wait(timeout=10)
    with stateward.open(str(tmp_path), agent="a"):
        pass


def test_released_on_sigkill(tmp_path: Path) -> None:
    p = subprocess.Popen(agent_cmd("hold", tmp_path, "a"), stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=agent_env())
    try:
        assert p.stdout is not None and p.stdout.readline() == b"held\n"
        with pytest.raises(stateward.WriterBusy):
            stateward.open(str(tmp_path), agent="a")
    finally:
        p.kill()
        p.wait(timeout=10)
    with stateward.open(str(tmp_path), agent="a"):  # at once: nothing stale to wait out
        pass


def test_lock_timeout(tmp_path: Path) -> None:
    held = stateward.open(str(tmp_path), agent="a")
    start = time.monotonic()
    with pytest.raises(stateward.WriterBusy):
        stateward.open(str(tmp_path), agent="a", lock_timeout=0.2)
    assert time.monotonic() - start >= 0.2
    t = threading.Timer(0.1, held.close)
    t.start()
    with stateward.open(str(tmp_path), agent="a", lock_timeout=30):
        pass
    t.join()
