"""Reading a document with its version through versions.json, written by
hand as the watcher writes it."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import pytest

import stateward


def versions(dir: Path, docs: dict[str, Any]) -> None:
    (dir / ".stateward").mkdir(exist_ok=True)
    (dir / ".stateward" / "versions.json").write_text(json.dumps({"commit": 9, "docs": docs}))


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


DOC = b'{\n  "a": 1,\n  "big": 12345678901234567890123\n}\n'


def test_read_pairs_bytes_with_version(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_bytes(DOC)
    versions(tmp_path, {"x.json": {"version": 4, "exists": True, "sha256": sha(DOC)}})
    assert stateward.read_document(str(tmp_path), "x.json", 1) == (4, {"a": 1, "big": 12345678901234567890123})
    with stateward.open(str(tmp_path), agent="a") as a:
        assert a.read("x.json") == (4, {"a": 1, "big": 12345678901234567890123})


def test_read_missing(tmp_path: Path) -> None:
    assert stateward.read_document(str(tmp_path), "x.json", 1) == (0, None)  # no versions file yet
    versions(tmp_path, {"x.json": {"version": 7, "exists": False}})
    assert stateward.read_document(str(tmp_path), "x.json", 1) == (7, None)  # deleted at version 7


def test_read_unversioned(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_bytes(b'{"edited":"by hand"}\n')
    versions(tmp_path, {"x.json": {"version": 4, "exists": True, "sha256": sha(DOC)}})
    start = time.monotonic()
    with pytest.raises(stateward.Unversioned):
        stateward.read_document(str(tmp_path), "x.json", 0.1)
    assert time.monotonic() - start >= 0.1


def test_read_bad_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        stateward.read_document(str(tmp_path), "../x.json", 1)


def test_read_byte_order_mark(tmp_path: Path) -> None:
    """A byte order mark (some editors write one) is not part of the JSON
    text; the hash covers the bytes on disk, mark included."""
    data = b"\xef\xbb\xbf" + DOC
    (tmp_path / "x.json").write_bytes(data)
    versions(tmp_path, {"x.json": {"version": 5, "exists": True, "sha256": sha(data)}})
    assert stateward.read_document(str(tmp_path), "x.json", 1) == (5, {"a": 1, "big": 12345678901234567890123})
