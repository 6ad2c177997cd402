"""Against the real watcher binary, built from this checkout."""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

import stateward
from conftest import Watcher, agent_cmd, agent_env, check_board, make_board, read_intents, read_results, run_procs, wait_for


def test_api(state_dir: Path, watcher: Watcher) -> None:
    d = str(state_dir)
    with stateward.open(d, agent="planner") as agent:
        seq = agent.append("tasks.json", patch=[{"op": "add", "path": "", "value": {"tasks": {}}}], if_version=0, id="create")
        r = agent.wait(seq, timeout=10.0)
        assert r == {"seq": seq, "id": "create", "file": "tasks.json", "status": "applied", "version": 1, "commit": r["commit"]}
        assert agent.read("tasks.json") == (1, {"tasks": {}})

        r = agent.submit("tasks.json", merge={"tasks": {"t1": {"status": "open"}}}, timeout=10.0)
        assert (r["status"], r["version"]) == ("applied", 2)
        # A failed precondition is a result, not an exception.
        r = agent.submit("tasks.json", patch=[{"op": "add", "path": "/x", "value": 1}], if_version=1)
        assert r["status"] == "conflict" and "error" in r
        r = agent.submit("tasks.json", patch=[{"op": "nope", "path": "/x"}])
        assert r["status"] == "rejected"
        # A retried id is answered with the first result; an id reused for
        # another intent is rejected.
        r = agent.submit("tasks.json", patch=[{"op": "add", "path": "", "value": {"tasks": {}}}], if_version=0, id="create")
        assert r["retry"] is True and r["version"] == 1
        r = agent.submit("tasks.json", merge={"y": 1}, id="create")
        assert r["status"] == "rejected" and "for a different intent" in r["error"]

        r = agent.update("tasks.json", lambda data, version: [{"op": "replace", "path": "/tasks/t1/status", "value": "done"}])
        assert r is not None and r["status"] == "applied" and agent.last_attempts == 1
        version, data = agent.read("tasks.json")
        assert data["tasks"]["t1"]["status"] == "done" and version == r["version"]
        assert agent.update("tasks.json", lambda data, version: None) is None
        r = agent.update("tasks.json", lambda data, version: {"phase": "review"})  # a dict is a merge patch
        assert r is not None and agent.read("tasks.json")[1]["phase"] == "review"

        with pytest.raises(stateward.Conflict) as ce:
            agent.update("tasks.json", lambda d, v: [{"op": "test", "path": "/phase", "value": "x"}], max_attempts=3)
        assert ce.value.attempts == 3 and ce.value.result["status"] == "conflict"
        with pytest.raises(stateward.Rejected) as re_:
            agent.update("tasks.json", lambda d, v: [{"op": "move", "from": "/nope", "path": "/a"}])
        assert re_.value.result["status"] == "rejected"
        with pytest.raises(ValueError):
            agent.update("tasks.json", lambda d, v: {"a": 1}, skip_if_version=True)
        with pytest.raises(ValueError):  # a test of another path does not guard a replace
            agent.update(
                "tasks.json",
                lambda d, v: [{"op": "test", "path": "/tasks", "value": {}}, {"op": "replace", "path": "/phase", "value": "x"}],
                skip_if_version=True,
            )
        r = agent.update(
            "tasks.json",
            lambda d, v: [{"op": "test", "path": "/phase", "value": "review"}, {"op": "replace", "path": "/phase", "value": "done"}],
            skip_if_version=True,
        )
        assert r is not None and r["status"] == "applied"
        assert "if_version" not in read_intents(state_dir, "planner")[-1]

        # The watcher wrote what the CLI reads back.
        out = subprocess.run([watcher.bin, "read", "--dir", d, "tasks.json"], capture_output=True, check=True)
        doc = json.loads(out.stdout)
        assert (doc["version"], doc["data"]) == agent.read("tasks.json")

        with pytest.raises(stateward.Timeout):
            agent.wait(agent.last_seq + 1, timeout=0.05)


def test_eight_processes_claim_100_tasks(state_dir: Path, watcher: Watcher, report: dict[str, Any]) -> None:
    make_board(state_dir, 100)
    cmds = [agent_cmd("claim", state_dir, f"py-{i}") for i in range(8)]
    import time

    start = time.monotonic()
    sums = run_procs(cmds, timeout=300)
    took = time.monotonic() - start
    check_board(state_dir, sums, 100)
    intents = sum(s["intents"] for s in sums)
    report["8 Python processes, 100 tasks"] = (
        f"{intents} intents in {took:.2f}s ({intents / took:.0f} intents/s), "
        f"claims {[len(s['claimed']) for s in sums]}, conflicts {sum(s['conflicts'] for s in sums)}, double claims 0"
    )


def test_update_under_contention(state_dir: Path, watcher: Watcher, report: dict[str, Any]) -> None:
    with stateward.open(str(state_dir), agent="setup") as a:
        assert a.submit("counter.json", merge={"n": 0, "by": []}, if_version=0)["status"] == "applied"
    procs, each = 6, 15
    go = state_dir.parent / "go"
    names = [f"u-{i}" for i in range(procs)]

    def start_together() -> None:
        # Once every process has opened its agent, let them all go at once.
        wait_for(lambda: all(proc_holds(state_dir, n) for n in names), 120, "the updaters to open")
        go.touch()

    t = threading.Thread(target=start_together)
    t.start()
    try:
        sums = run_procs([agent_cmd("update", state_dir, n, str(each), str(go)) for n in names], timeout=300)
    finally:
        go.touch()
        t.join()
    version, data = stateward.read_document(str(state_dir), "counter.json", 10)
    assert data["n"] == procs * each, "lost update"
    assert sorted(data["by"]) == sorted(f"u-{i}" for i in range(procs) for _ in range(each))
    assert version == 1 + procs * each
    attempts = [n for s in sums for n in s["attempts"]]
    assert max(attempts) > 1, "no contention at all: the test proves nothing"
    report[f"update, {procs} processes x {each}"] = (
        f"n={data['n']}, attempts mean {statistics.mean(attempts):.2f}, max {max(attempts)}, "
        f"conflicts {sum(attempts) - len(attempts)}"
    )


def proc_holds(dir: Path, agent: str) -> bool:
    """Whether some writer holds agent (its socket name is bound)."""
    folder = dir / "journal" / agent
    if not folder.exists():
        return False
    want = stateward.lock_socket_name(str(folder)).decode().replace("\0", "@")
    with open("/proc/net/unix") as f:
        return any(want in line for line in f)


def test_kill9_mid_append_and_restart(state_dir: Path, watcher: Watcher) -> None:
    """Appending processes are SIGKILLed at random moments, one line is left
    torn by hand (a kill inside write(2)), and the agent restarts: every
    acknowledged intent is applied exactly once, the torn line never, and
    seq continues after the last complete record."""
    d = str(state_dir)
    with stateward.open(d, agent="setup") as a:
        assert a.submit("counter.json", merge={}, if_version=0)["status"] == "applied"
    acked: list[int] = []
    rng = random.Random(16)
    for _ in range(5):
        p = subprocess.Popen(agent_cmd("append", state_dir, "k"), stdout=subprocess.PIPE, env=agent_env())
        assert p.stdout is not None
        for _ in range(rng.randint(1, 40)):
            acked.append(int(p.stdout.readline()))
        p.kill()  # SIGKILL, mid-append or between two
        p.wait()
        acked += [int(l) for l in p.stdout.read().split()]
        p.stdout.close()
    folder = state_dir / "journal" / "k"
    newest = sorted(n for n in os.listdir(folder) if n.endswith(".jsonl"))[-1]
    durable = read_intents(state_dir, "k")
    with open(folder / newest, "ab") as f:
        f.write(b'{"seq":%d,"file":"counter.json","patch":[{"op":"inc","path":"/k","val' % (durable[-1]["seq"] + 1))
    with stateward.open(d, agent="k") as a:
        assert a.last_seq == durable[-1]["seq"]
        seq = a.append("counter.json", patch=[{"op": "inc", "path": "/k", "value": 1}])
        assert seq == durable[-1]["seq"] + 1
        assert a.wait(seq, timeout=30)["status"] == "applied"
    seqs = [i["seq"] for i in read_intents(state_dir, "k")]
    assert seqs == list(range(1, len(seqs) + 1))
    assert set(acked) <= set(seqs), "an acknowledged intent was lost"
    results = [r for r in read_results(state_dir, "k")]
    assert [r["seq"] for r in results] == seqs
    assert all(r["status"] == "applied" for r in results)
    assert stateward.read_document(d, "counter.json", 10)[1] == {"k": len(seqs)}


def test_wait_across_watcher_restart(state_dir: Path, watcher: Watcher) -> None:
    d = str(state_dir)
    with stateward.open(d, agent="a") as agent:
        assert agent.submit("x.json", merge={"n": 0}, if_version=0)["status"] == "applied"
        watcher.kill()
        seq = agent.append("x.json", patch=[{"op": "inc", "path": "/n", "value": 1}])
        with pytest.raises(stateward.Timeout):
            agent.wait(seq, timeout=0.1)
        got: list[Any] = []
        waiting = threading.Event()

        def wait() -> None:
            waiting.set()
            try:
                got.append(agent.wait(seq, timeout=60))
            except Exception as e:  # reported below
                got.append(e)

        t = threading.Thread(target=wait)
        t.start()
        waiting.wait()
        watcher.start()
        t.join(timeout=90)
        assert got and isinstance(got[0], dict), got
        assert got[0]["status"] == "applied" and got[0]["seq"] == seq
        assert agent.read("x.json") == (2, {"n": 1})
        # And once more with a SIGTERM (a clean stop) in between.
        watcher.stop()
        seq = agent.append("x.json", patch=[{"op": "inc", "path": "/n", "value": 1}])
        watcher.start()
        assert agent.wait(seq, timeout=60)["status"] == "applied"


def test_readme_example(state_dir: Path, watcher: Watcher) -> None:
    text = (Path(__file__).parent.parent / "README.md").read_text()
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    assert 'DIR = "/var/lib/stateward"' in code
    exec(compile(code.replace('"/var/lib/stateward"', repr(str(state_dir))), "README.md", "exec"), {})
    version, data = stateward.read_document(str(state_dir), "tasks.json", 10)
    assert data == {"claims": 1, "tasks": {"t1": {"status": "claimed", "owner": "planner", "note": "claimed at version 3"}}}
    assert version == 4
