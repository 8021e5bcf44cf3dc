"""The synthetic micro-world: a seeded generator of scenes, training conversations and six
evaluation sets in the official file formats of VQAv2, GQA, VizWiz, TextVQA, POPE and MMBench.

>>> from qmamba.data.synth import synthesize, chance_levels
>>> manifest = synthesize("micro", seed=0, n_align=4000, n_finetune=4000, n_eval=200)  # doctest: +SKIP
>>> chance_levels(manifest)  # doctest: +SKIP

Modules: ``vocab`` (words), ``font`` (bitmap font), ``scene`` (scene graphs), ``style`` (drawing styles and
held-out styles), ``render`` (pixels),
``language`` (referring expressions, captions), ``questions`` / ``relations`` / ``families``
(question families), ``choice`` (multiple choice), ``answers`` (10 human answers),
``conversations`` (align / finetune data), ``eval_sets`` / ``pope`` / ``mmbench`` (evaluation
files), ``chance`` (chance levels), ``manifest``, ``pipeline`` (``synthesize``), ``cli`` (``main``).
"""

from __future__ import annotations

from qmamba.data.synth.chance import chance_levels
from qmamba.data.synth.cli import main
from qmamba.data.synth.manifest import SynthManifest
from qmamba.data.synth.pipeline import TASK_NAMES, synthesize

__all__ = ["TASK_NAMES", "SynthManifest", "chance_levels", "main", "synthesize"]
