"""Reading a document together with its version (Go: journal/document.go).

The watcher rewrites DIR/.stateward/versions.json (by atomic rename) after a
batch's documents are on disk and before their results appear. A reader
reads the versions file, the document, and the versions file again, and
pairs the bytes with the version whose SHA-256 they have.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Any

from ._errors import StatewardError, Unversioned
from ._format import VERSIONS_PATH, check_doc_name


def read_versions(dir: str) -> dict[str, Any]:
    """The docs map of the versions file of dir; a missing file reads as no
    documents."""
    p = os.path.join(dir, VERSIONS_PATH)
    try:
        with open(p, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return {}
    try:
        v = json.loads(data)
    except ValueError as e:
        raise StatewardError(f"stateward: parse versions {p}: {e}") from None
    docs = v.get("docs") if isinstance(v, dict) else None
    return docs if isinstance(docs, dict) else {}


def _read_once(dir: str, name: str) -> tuple[int, Any]:
    before = read_versions(dir)
    try:
        with open(os.path.join(dir, name), "rb") as f:
            data: bytes | None = f.read()
    except FileNotFoundError:
        data = None
    after = read_versions(dir)
    digest = hashlib.sha256(data).hexdigest() if data is not None else ""
    for docs in (after, before):
        dv = docs.get(name)
        known = isinstance(dv, dict)
        if not isinstance(dv, dict):
            dv = {}
        exists = bool(dv.get("exists"))
        version = int(dv.get("version", 0))
        if data is None and not exists:
            return version, None
        if data is not None and known and exists and dv.get("sha256") == digest:
            # From bytes, json.loads skips a UTF-8 byte order mark, as
            # Go's ReadDocument does (it is not part of the JSON text).
            return version, json.loads(data)
    raise Unversioned(f"stateward: document on disk matches no committed version: {name}")


def read_document(dir: str | os.PathLike[str], name: str, timeout: float = 10.0) -> tuple[int, Any]:
    """Document name of state directory dir and its version, as (version,
    data); data is None when the document does not exist. The pair is
    consistent: data is exactly what the watcher wrote as that version. While
    a commit replaces the file it retries (1 ms doubling to 100 ms) for up to
    timeout seconds, then raises Unversioned."""
    check_doc_name(name)
    dir = os.fspath(dir)
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        try:
            return _read_once(dir, name)
        except Unversioned:
            left = deadline - time.monotonic()
            if left <= 0:
                raise
        time.sleep(min(delay, left))
        delay = min(2 * delay, 0.1)

