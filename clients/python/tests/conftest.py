"""Fixtures: the stateward binary built from this checkout, watchers on
temporary state directories, and agent processes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

HERE = Path(__file__).resolve().parent
CLIENT = HERE.parent
REPO = CLIENT.parent.parent
AGENT = HERE / "agent_proc.py"

try:  # the installed package (CI), else the sources next to the tests
    import stateward  # noqa: F401

    FROM_SRC = False
except ImportError:
    sys.path.insert(0, str(CLIENT / "src"))
    FROM_SRC = True

_READY = re.compile(r"stateward: ready\b|\"@message\":\"ready\"")


def wait_for(cond: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll cond until it returns something true, or fail after timeout."""
    deadline = time.monotonic() + timeout
    pause = 0.001
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


@pytest.fixture(scope="session")
def stateward_bin(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The stateward binary: $STATEWARD_BIN, or built from this checkout."""
    env = os.environ.get("STATEWARD_BIN")
    if env:
        assert os.access(env, os.X_OK), f"STATEWARD_BIN={env} is not executable"
        return env
    out = tmp_path_factory.mktemp("bin") / "stateward"
    subprocess.run(["go", "build", "-o", str(out), "./cmd/stateward"], cwd=REPO, check=True)
    return str(out)


class Watcher:
    """A `stateward watch` process on one state directory."""

    def __init__(self, bin: str, dir: Path) -> None:
        self.bin = bin
        self.dir = dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        assert self.proc is None, "watcher already running"
        self.starts += 1
        log = self.dir.parent / f"{self.dir.name}-watch-{self.starts}.log"
        with open(log, "wb") as f:
            self.proc = subprocess.Popen(
                [self.bin, "watch", "--dir", str(self.dir), "--log-level", "info"],
                stdout=f,
                stderr=subprocess.STDOUT,
            )

        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"watcher exited with {self.proc.returncode}: {log.read_text()}")
            return bool(_READY.search(log.read_text()))

        wait_for(ready, 60, f"the watcher to be ready (log {log})")

    def stop(self) -> None:
        """SIGTERM: finish the batch in progress and exit 0."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=60)
        self.proc = None
        assert rc == 0, f"watcher exited with {rc}"

    def kill(self) -> None:
        """SIGKILL, at whatever point it is."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=60)
        self.proc = None


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    d = tmp_path / "state"
    d.mkdir()
    return d


@pytest.fixture
def watcher(stateward_bin: str, state_dir: Path) -> Iterator[Watcher]:
    """A running watcher on state_dir, stopped (and checked) at the end."""
    w = Watcher(stateward_bin, state_dir)
    w.start()
    try:
        yield w
    finally:
        if w.proc is not None:
            w.stop()


def agent_cmd(mode: str, dir: Path, agent: str, *args: str) -> list[str]:
    """The command line of a Python agent process (tests/agent_proc.py)."""
    return [sys.executable, str(AGENT), mode, str(dir), agent, *args]


def agent_env() -> dict[str, str]:
    env = dict(os.environ)
    if FROM_SRC:
        env["PYTHONPATH"] = os.pathsep.join(p for p in [str(CLIENT / "src"), env.get("PYTHONPATH", "")] if p)
    return env


def run_procs(
    cmds: list[list[str]],
    timeout: float,
    env: dict[str, str] | None = None,
    stages: list[tuple[Callable[[], None], list[list[str]]]] | None = None,
) -> list[dict[str, Any]]:
    """Start every command at once, then for each stage (ready, more): once
    ready() returns, start more. Wait for all, and return the JSON each
    printed on its last line of output; fail if any failed."""
    procs = []
    try:
        for ready, more in [(lambda: None, cmds)] + (stages or []):
            ready()
            procs += [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env or agent_env()) for c in more]
    except BaseException:
        for p in procs:
            p.kill()
            p.wait()
        raise
    cmds = cmds + [c for _, more in stages or [] for c in more]
    outs = []
    deadline = time.monotonic() + timeout
    try:
        for c, p in zip(cmds, procs):
            out, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            assert p.returncode == 0, f"{c} exited with {p.returncode}:\n{err.decode()}"
            outs.append(json.loads(out.decode().strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return outs


def read_results(dir: Path, agent: str) -> list[dict[str, Any]]:
    """Every complete line of an agent's results, in order."""
    out: list[dict[str, Any]] = []
    folder = dir / "results" / agent
    if not folder.exists():  # an agent that came when the work was done
        return out
    for name in sorted(os.listdir(folder)):
        if re.fullmatch(r"[0-9]{20}\.jsonl", name):
            for line in (folder / name).read_bytes().split(b"\n")[:-1]:
                out.append(json.loads(line))
    return out


def read_intents(dir: Path, agent: str) -> list[dict[str, Any]]:
    """Every complete line of an agent's journal, in order."""
    out: list[dict[str, Any]] = []
    folder = dir / "journal" / agent
    if not folder.exists():  # an agent that came when the work was done
        return out
    for name in sorted(os.listdir(folder)):
        if re.fullmatch(r"[0-9]{20}\.jsonl", name):
            for line in (folder / name).read_bytes().split(b"\n")[:-1]:
                out.append(json.loads(line))
    return out


def make_board(dir: Path, tasks: int) -> None:
    """tasks.json with `tasks` open tasks and metrics.json, through a
    journal, in the shape `stateward demo-agent` works on."""
    import stateward

    board = {f"task-{i:04d}": {"title": f"Task {i}", "status": "open", "assignee": None} for i in range(1, tasks + 1)}
    with stateward.open(str(dir), agent="setup") as a:
        r = a.submit("tasks.json", patch=[{"op": "add", "path": "", "value": {"tasks": board}}], if_version=0, timeout=30)
        assert r["status"] == "applied", r
        r = a.submit("metrics.json", merge={"claims": {}, "conflicts": {}}, if_version=0, timeout=30)
        assert r["status"] == "applied", r


def check_board(dir: Path, sums: list[dict[str, Any]], tasks: int) -> None:
    """Each task claimed exactly once, by the agent that says so; each
    agent's counter equals its claims; one result per intent."""
    import stateward

    _, tdoc = stateward.read_document(str(dir), "tasks.json", 10)
    _, mdoc = stateward.read_document(str(dir), "metrics.json", 10)
    owner: dict[str, str] = {}
    for s in sums:
        for t in s["claimed"]:
            assert t not in owner, f"{t} claimed by {owner[t]} and {s['agent']}"
            owner[t] = s["agent"]
            assert tdoc["tasks"][t]["assignee"] == s["agent"]
            assert tdoc["tasks"][t]["status"] == "claimed"
    assert len(owner) == tasks, f"{len(owner)} of {tasks} tasks claimed"
    assert all(t["status"] == "claimed" for t in tdoc["tasks"].values())
    for s in sums:
        assert mdoc["claims"].get(s["agent"], 0) == len(s["claimed"]), (s["agent"], mdoc["claims"])
        intents = read_intents(dir, s["agent"])
        results = [r for r in read_results(dir, s["agent"]) if not r.get("retry")]
        assert len(intents) == s["intents"], (s["agent"], len(intents), s["intents"])
        assert [r["seq"] for r in results] == [i["seq"] for i in intents], s["agent"]
        assert sorted(s["results"]) == [i["seq"] for i in intents], s["agent"]


_FIGURES: dict[str, Any] = {}


@pytest.fixture
def report() -> dict[str, Any]:
    """Figures a test measured, printed at the end of the run."""
    return _FIGURES


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _FIGURES:
        terminalreporter.section("stateward figures")
        for k, v in _FIGURES.items():
            terminalreporter.write_line(f"{k}: {v}")
