"""The ``files`` fixture: writes small benchmark files in the official formats under tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def write_json(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture
def files(tmp_path):
    """files.json(name, obj) / files.jsonl(name, records) -> path under tmp_path."""

    class _Files:
        def json(self, name, obj):
            return write_json(tmp_path / name, obj)

        def jsonl(self, name, records):
            return write_jsonl(tmp_path / name, records)

        def path(self, name):
            return tmp_path / name

    return _Files()
