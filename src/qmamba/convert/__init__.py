"""Converters from the peers' released checkpoints to qmamba model directories.

    qmamba convert cobra   --run-dir RUN --dinov2 DIR --siglip DIR --llm-tokenizer DIR --out OUT
    qmamba convert mlmamba --run-dir RUN --dinov2 DIR --siglip DIR --llm-tokenizer DIR --out OUT

A peer's run directory (prismatic's layout: ``config.json`` and ``checkpoints/latest-checkpoint.pt``) holds the
trained connector and language model; the vision towers are the timm / open_clip weights it was trained on.
``pickled.py`` reads pickles as tensors only, ``timm_vision.py`` renames timm towers to the transformers towers
``VisionEncoder`` runs, ``prismatic.py`` reads the run directory and assembles the model, ``cobra.py`` and
``mlmamba.py`` hold each peer's key layout.
"""

from qmamba.convert.cobra import convert_cobra
from qmamba.convert.mlmamba import convert_mlmamba

__all__ = ["convert_cobra", "convert_mlmamba"]
