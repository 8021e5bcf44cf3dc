"""Files shipped inside the qmamba package (the micro-world's pretrained backbones).

A path written ``assets:micro/mamba`` in a config or on the command line means this package folder's
``micro/mamba``; ``resolve`` turns such paths into real ones and leaves other paths alone.
"""

from __future__ import annotations

from pathlib import Path

from qmamba.errors import CheckpointError

ROOT = Path(__file__).parent
PREFIX = "assets:"


def resolve(path: str | Path) -> Path:
    text = str(path)
    if not text.startswith(PREFIX):
        return Path(text).expanduser()
    real = ROOT / text[len(PREFIX):]
    if not real.exists():
        raise CheckpointError(f"{text}: no such file in qmamba's assets ({real}); rebuild them with "
                              f"'qmamba micro build --out {ROOT / 'micro'}'")
    return real
