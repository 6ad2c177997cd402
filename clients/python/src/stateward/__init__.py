"""stateward: the Python client of stateward's journal format.

Agents append intents to their own journal, DIR/journal/<agent>/, and the
watcher (``stateward watch``) applies them to the shared JSON documents and
answers each in DIR/results/<agent>/. This package writes and reads those
files exactly as Go's journal package does; it uses the standard library
only::

    import stateward

    with stateward.open(dir, agent="planner") as agent:
        seq = agent.append("tasks.json", patch=[{"op": "add", "path": "/x", "value": 1}])
        result = agent.wait(seq, timeout=10.0)      # {"seq": 1, "status": "applied", ...}
        version, data = agent.read("tasks.json")
"""

from __future__ import annotations

import os

from ._agent import (
    DEFAULT_BACKOFF_FACTOR,
    DEFAULT_INITIAL_DELAY,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_DELAY,
    Agent,
    UpdateFunc,
)
from ._document import read_document
from ._errors import (
    Closed,
    Conflict,
    Rejected,
    ResultGone,
    SeqExhausted,
    StatewardError,
    Timeout,
    Unversioned,
    WriterBusy,
)
from ._format import DEFAULT_MAX_LINE, DEFAULT_SEGMENT_SIZE, segment_name
from ._writer import lock_socket_name

# open is left out of __all__ so that "from stateward import *" does not
# hide the builtin open; call it as stateward.open.
__all__ = [
    "DEFAULT_BACKOFF_FACTOR",
    "DEFAULT_INITIAL_DELAY",
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_MAX_DELAY",
    "DEFAULT_MAX_LINE",
    "DEFAULT_SEGMENT_SIZE",
    "Agent",
    "Closed",
    "Conflict",
    "Rejected",
    "ResultGone",
    "SeqExhausted",
    "StatewardError",
    "Timeout",
    "Unversioned",
    "UpdateFunc",
    "WriterBusy",
    "lock_socket_name",
    "read_document",
    "segment_name",
]


def open(
    dir: str | os.PathLike[str],
    agent: str,
    *,
    lock_timeout: float = 0.0,
    segment_size: int = DEFAULT_SEGMENT_SIZE,
    max_line: int = DEFAULT_MAX_LINE,
    inotify: bool = True,
) -> Agent:
    """Open agent ``agent`` of state directory ``dir``: create its journal
    folder (fsyncing the folders above), take its writer lock, cut a torn
    tail and continue seq after the last complete record.

    Raises WriterBusy if another writer, in any process or language, holds
    the agent name; with lock_timeout > 0, retries every 20 ms that long
    first. Waiting for results sleeps on inotify where it can be had
    (inotify=False: polls with a short backoff only). Use the Agent as a
    context manager, or close() it."""
    return Agent(dir, agent, lock_timeout=lock_timeout, segment_size=segment_size, max_line=max_line, inotify=inotify)
