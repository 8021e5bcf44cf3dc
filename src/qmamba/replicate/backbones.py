"""Which backbones a replication's runs were trained on: a fingerprint of their weight files and their build's gates.

The small tier's backbones are built on the GPU machine that runs the replication, and a later machine may
rebuild them (same recipe, same seed; a GPU's reductions need not give the same bits) and resume from the
records of an earlier one. Every run's scores therefore name the backbones they came from, and the report
states how many builds its runs span, so mixing builds is visible rather than silent.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

from qmamba.assets import resolve

WEIGHTS = (".safetensors", ".bin", ".pt")


def fingerprint(folders: tuple[Path, ...]) -> str:
    """sha256 (first 12 hex digits) over the names and bytes of every weight file in ``folders``."""
    digest = hashlib.sha256()
    for folder in folders:
        for f in sorted(p for p in folder.rglob("*") if p.is_file() and p.name.endswith(WEIGHTS)):
            digest.update(f"{folder.name}/{f.relative_to(folder)}\0".encode())
            with f.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()[:12]


@functools.cache
def backbones_record(llm: str, vision: str) -> dict:
    """{"fingerprint", and from the build's build.json where the backbones have one: "seed", "gates"}."""
    folders = (resolve(llm), resolve(vision))
    record = {"fingerprint": fingerprint(folders)}
    build = folders[0].parent / "build.json"
    if build.is_file():
        data = json.loads(build.read_text())
        record.update({k: data[k] for k in ("seed", "gates") if k in data})
    return record


def builds_summary(records: list[dict]) -> list[dict]:
    """The distinct backbones of ``records`` (each a run's "backbones"; runs without one count as "unknown"),
    in order of first appearance: [{"fingerprint", "runs", "gates"?}]."""
    seen: dict[str, dict] = {}
    for rec in records:
        rec = rec or {"fingerprint": "unknown"}
        entry = seen.setdefault(rec["fingerprint"], {"fingerprint": rec["fingerprint"], "runs": 0,
                                                     **({"gates": rec["gates"]} if "gates" in rec else {})})
        entry["runs"] += 1
    return list(seen.values())
