"""A Python agent process for the multi-process tests.

    agent_proc.py claim  DIR AGENT [MAX_CLAIMS]   claim open tasks of tasks.json
    agent_proc.py update DIR AGENT N [GO]         N read-modify-write updates of counter.json
                                                  (once the file GO exists)
    agent_proc.py append DIR AGENT                append incs to counter.json until killed,
                                                  printing each seq once durable
    agent_proc.py hold   DIR AGENT                hold the agent name until stdin closes

claim prints the summary `stateward demo-agent` prints: agent, claimed,
conflicts, intents, results.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from typing import Any

import stateward


def claim(dir: str, name: str, max_claims: int) -> dict[str, Any]:
    s: dict[str, Any] = {"agent": name, "claimed": [], "conflicts": 0, "intents": 0, "results": []}
    with stateward.open(dir, agent=name) as agent:

        def submit(file: str, patch: list[Any]) -> dict[str, Any]:
            seq = agent.append(file, patch=patch)
            s["intents"] += 1
            r = agent.wait(seq, timeout=60)
            s["results"].append(r["seq"])
            return r

        while max_claims == 0 or len(s["claimed"]) < max_claims:
            _, board = agent.read("tasks.json")
            open_ = sorted(t for t, v in board["tasks"].items() if v["status"] == "open")
            if not open_:
                break
            t = random.choice(open_)
            r = submit(
                "tasks.json",
                [
                    {"op": "test", "path": f"/tasks/{t}/status", "value": "open"},
                    {"op": "replace", "path": f"/tasks/{t}/status", "value": "claimed"},
                    {"op": "replace", "path": f"/tasks/{t}/assignee", "value": name},
                ],
            )
            if r["status"] == "conflict":
                s["conflicts"] += 1
                continue
            assert r["status"] == "applied", r
            s["claimed"].append(t)
            r = submit("metrics.json", [{"op": "inc", "path": f"/claims/{name}", "value": 1}])
            assert r["status"] == "applied", r
    return s


def update(dir: str, name: str, n: int, go: str | None) -> dict[str, Any]:
    attempts = []
    with stateward.open(dir, agent=name) as agent:
        while go is not None and not os.path.exists(go):  # all start together
            time.sleep(0.001)
        for _ in range(n):
            r = agent.update(
                "counter.json",
                lambda data, version: [
                    {"op": "replace", "path": "/n", "value": data["n"] + 1},
                    {"op": "add", "path": "/by/-", "value": name},
                ],
                timeout=120,
            )
            assert r is not None and r["status"] == "applied", r
            attempts.append(agent.last_attempts)
    return {"agent": name, "attempts": attempts}


def append(dir: str, name: str) -> None:
    with stateward.open(dir, agent=name) as agent:
        while True:
            seq = agent.append("counter.json", patch=[{"op": "inc", "path": f"/{name}", "value": 1}])
            print(seq, flush=True)


def hold(dir: str, name: str) -> None:
    with stateward.open(dir, agent=name):
        print("held", flush=True)
        sys.stdin.read()


def main() -> None:
    mode, dir, name, *rest = sys.argv[1:]
    if mode == "claim":
        print(json.dumps(claim(dir, name, int(rest[0]) if rest else 0)))
    elif mode == "update":
        print(json.dumps(update(dir, name, int(rest[0]), rest[1] if len(rest) > 1 else None)))
    elif mode == "append":
        append(dir, name)
    elif mode == "hold":
        hold(dir, name)
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
