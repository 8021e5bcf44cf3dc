"""The default world is frozen: the same seed writes the same bytes as the world the shipped backbones and the
quickstart's figures were made from. New world settings (drawing styles, a held-out style, harder scenes) are
opt-in, and their defaults must leave this hash unchanged."""

from __future__ import annotations

import hashlib
from pathlib import Path

from qmamba.data.synth import synthesize

# sha256 over (relative path, bytes) of every file of synthesize(seed=5, n_align=6, n_finetune=6, n_eval=4),
# recorded before drawing styles existed
GOLDEN = "2c63c91ebb37f04e62a1d33fae0a7e507675e96412083e6326088ae2e1b4c20a"


def tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_the_default_world_is_unchanged(tmp_path):
    root = synthesize(tmp_path / "w", seed=5, n_align=6, n_finetune=6, n_eval=4).root
    assert tree_hash(root) == GOLDEN, "the default micro-world's files changed for seed 5: defaults must reproduce it"


def test_the_golden_hash_can_fail(tmp_path):
    root = synthesize(tmp_path / "w", seed=6, n_align=6, n_finetune=6, n_eval=4).root
    assert tree_hash(root) != GOLDEN
