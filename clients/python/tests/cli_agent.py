"""An agent made of `stateward` command lines only (read, then submit
--wait), for the mixed-language test:

    cli_agent.py STATEWARD_BIN DIR AGENT

Each submit is its own process, which opens the agent's journal, takes its
writer lock, appends one intent and lets go. Prints the summary `stateward
demo-agent` prints.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from typing import Any


def main() -> None:
    bin, dir, name = sys.argv[1:]
    s: dict[str, Any] = {"agent": name, "claimed": [], "conflicts": 0, "intents": 0, "results": []}

    def submit(file: str, patch: list[Any]) -> int:
        p = subprocess.run(
            [bin, "submit", "--dir", dir, "--agent", name, "--file", file, "--wait", "--timeout", "60s", json.dumps(patch)],
            capture_output=True,
        )
        if p.returncode not in (0, 3):
            sys.exit(f"submit exited with {p.returncode}: {p.stderr.decode()}")
        s["intents"] += 1
        s["results"].append(json.loads(p.stdout)["seq"])
        return p.returncode

    while True:
        out = subprocess.run([bin, "read", "--dir", dir, "tasks.json"], capture_output=True, check=True).stdout
        board = json.loads(out)["data"]["tasks"]
        open_ = sorted(t for t, v in board.items() if v["status"] == "open")
        if not open_:
            break
        t = random.choice(open_)
        rc = submit(
            "tasks.json",
            [
                {"op": "test", "path": f"/tasks/{t}/status", "value": "open"},
                {"op": "replace", "path": f"/tasks/{t}/status", "value": "claimed"},
                {"op": "replace", "path": f"/tasks/{t}/assignee", "value": name},
            ],
        )
        if rc == 3:
            s["conflicts"] += 1
            continue
        s["claimed"].append(t)
        if submit("metrics.json", [{"op": "inc", "path": f"/claims/{name}", "value": 1}]) != 0:
            sys.exit("count claim: conflict")
    print(json.dumps(s))


if __name__ == "__main__":
    main()
