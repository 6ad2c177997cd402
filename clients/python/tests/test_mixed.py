"""Go, Python and command-line agents on one state directory, and one
writer per agent name across languages."""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest

import stateward
from test_lock import abstract_names, proc_name
from conftest import HERE, REPO, Watcher, agent_cmd, check_board, make_board, read_intents, run_procs, wait_for


def ts_client() -> str | None:
    """The built TypeScript client (clients/typescript/dist/index.js, or
    $STATEWARD_TS_CLIENT), or None when this checkout has no TypeScript
    client. A TypeScript client that is there but not built fails the test."""
    env = os.environ.get("STATEWARD_TS_CLIENT")
    if env:
        return env
    if not (REPO / "clients" / "typescript" / "package.json").exists():
        return None
    index = REPO / "clients" / "typescript" / "dist" / "index.js"
    assert index.exists(), f"{index} missing: run npm ci && npm run build in clients/typescript"
    return str(index)


def ts_cmd(mode: str, dir: Path, agent: str) -> list[str]:
    client = ts_client()
    assert client is not None
    return ["node", str(HERE / "ts_agent.mjs"), mode, client, str(dir), agent]


def test_mixed_agents_claim_tasks(state_dir: Path, watcher: Watcher, report: dict[str, Any]) -> None:
    make_board(state_dir, 60)
    d = str(state_dir)
    # The command-line agents, slowest (a process per intent), start first,
    # then the TypeScript ones (Node starts slowly), then the others, each
    # group once the one before has had its first results: every kind takes
    # part.
    def first_results(names: list[str]) -> Callable[[], None]:
        def ready() -> None:
            wait_for(lambda: all((state_dir / "results" / n).exists() for n in names), 120, f"first results of {names}")

        return ready

    cli = [f"cli-{i}" for i in range(2)]
    ts = [f"ts-{i}" for i in range(2)] if ts_client() is not None else []
    stages = [(first_results(cli), [ts_cmd("claim", state_dir, n) for n in ts])]
    stages.append(
        (
            first_results(ts),
            [[watcher.bin, "demo-agent", "--dir", d, "--agent", f"go-{i}"] for i in range(2)]
            + [agent_cmd("claim", state_dir, f"py-{i}") for i in range(2)],
        )
    )
    start = time.monotonic()
    sums = run_procs([[sys.executable, str(HERE / "cli_agent.py"), watcher.bin, d, n] for n in cli], timeout=300, stages=stages)
    took = time.monotonic() - start
    check_board(state_dir, sums, 60)
    by_kind: dict[str, int] = {}
    for s in sums:
        kind = s["agent"].split("-")[0]
        by_kind[kind] = by_kind.get(kind, 0) + len(s["claimed"])
    assert sum(by_kind.values()) == 60
    assert all(s["intents"] > 0 for s in sums if s["agent"].split("-")[0] in ("cli", "ts")), "an agent did nothing"
    report[f"mixed {'Go/Python/CLI/TypeScript' if ts_client() else 'Go/Python/CLI (no TypeScript client in this checkout)'} agents, 60 tasks"] = (
        f"claims by kind {by_kind}, {sum(s['intents'] for s in sums)} intents in {took:.2f}s, double claims 0"
    )


def test_python_holds_go_refused(state_dir: Path, stateward_bin: str) -> None:
    d = str(state_dir)
    with stateward.open(d, agent="x") as a:
        a.append("x.json", merge=1)
        for cmd in (
            ["submit", "--dir", d, "--agent", "x", "--file", "x.json", "--timeout", "1s", "--merge", "2"],
            ["update", "--dir", d, "--agent", "x", "--file", "x.json", "--timeout", "1s", "--", "echo", "[]"],
        ):
            p = subprocess.run([stateward_bin, *cmd], capture_output=True, timeout=60)
            assert p.returncode == 1, (cmd, p.returncode, p.stderr)
            assert b"lock" in p.stderr and b"x" in p.stderr, p.stderr
        assert [i["seq"] for i in read_intents(state_dir, "x")] == [1]
    p = subprocess.run(
        [stateward_bin, "submit", "--dir", d, "--agent", "x", "--file", "x.json", "--timeout", "1s", "--merge", "2"],
        capture_output=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    assert [i["seq"] for i in read_intents(state_dir, "x")] == [1, 2]  # Go continues the Python journal


def test_each_lock_alone_refuses_go(state_dir: Path, stateward_bin: str) -> None:
    """The socket name Python binds, alone, keeps a Go writer out (the two
    compute the same bytes), and so does the flock alone."""
    d = str(state_dir)
    folder = state_dir / "journal" / "z"
    folder.mkdir(parents=True)
    submit = [stateward_bin, "submit", "--dir", d, "--agent", "z", "--file", "z.json", "--timeout", "200ms", "--merge", "1"]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(stateward.lock_socket_name(str(folder)))
    s.listen(1)
    try:
        p = subprocess.run(submit, capture_output=True, timeout=60)
        assert p.returncode == 1 and b"lock" in p.stderr, p.stderr
    finally:
        s.close()
    fd = os.open(folder / ".lock", os.O_RDONLY | os.O_CREAT, 0o664)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        p = subprocess.run(submit, capture_output=True, timeout=60)
        assert p.returncode == 1 and b"lock" in p.stderr, p.stderr
    finally:
        os.close(fd)
    p = subprocess.run(submit, capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr


def test_go_holds_python_refused(state_dir: Path, stateward_bin: str) -> None:
    d = str(state_dir)
    ready = state_dir.parent / "go-holds"
    # `stateward update` holds the agent's writer while its command runs.
    p = subprocess.Popen(
        [stateward_bin, "update", "--dir", d, "--agent", "y", "--file", "y.json", "--timeout", "120s", "--",
         "sh", "-c", f"touch {ready}; exec sleep 120"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for(ready.exists, 60, "the Go writer to hold agent y")
        # Go binds the very name Python computes, and Python is refused by
        # it (the socket is tried before the flock).
        name = stateward.lock_socket_name(str(state_dir / "journal" / "y"))
        assert proc_name(name) in abstract_names()
        with pytest.raises(stateward.WriterBusy, match="socket"):
            stateward.open(d, agent="y")
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=60)
    with stateward.open(d, agent="y") as a:  # released by the Go process's death
        assert a.append("y.json", merge=1) == 1


def test_typescript_and_python_exclude_each_other(state_dir: Path) -> None:
    """Python holds an agent: the TypeScript client is refused; TypeScript
    holds one: Python is refused, by the socket (the name both bind)."""
    if ts_client() is None:
        return  # no TypeScript client in this checkout (reported by the mixed test's figures)
    d = str(state_dir)
    with stateward.open(d, agent="p"):
        p = subprocess.run(ts_cmd("try", state_dir, "p"), capture_output=True, timeout=60)
        assert p.returncode == 3, (p.returncode, p.stderr)
    p = subprocess.run(ts_cmd("try", state_dir, "p"), capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    h = subprocess.Popen(ts_cmd("hold", state_dir, "t"), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert h.stdout is not None and h.stdout.readline() == b"held\n"
        assert proc_name(stateward.lock_socket_name(str(state_dir / "journal" / "t"))) in abstract_names()
        with pytest.raises(stateward.WriterBusy, match="socket"):
            stateward.open(d, agent="t")
    finally:
        h.kill()  # SIGKILL: the kernel lets go of the name
        h.wait(timeout=60)
    with stateward.open(d, agent="t"):
        pass
