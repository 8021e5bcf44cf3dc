"""The sizes of the micro backbones: ``tiny`` (shipped in the package, built on CPU) and ``small`` (a GPU tier,
built on first use into a cache directory).

A ``MicroSize`` is data: the SigLIP towers, the Mamba LM's shape, the world it is pretrained on, both
trainings and the gates its build must pass. A test shrinks a size with ``dataclasses.replace`` and runs
the same code path as a real build.

    small   SigLIP-architecture encoder at 128 px (8 px patches: 16 x 16 = 256 patches, width 256, 6 layers)
            and a Mamba LM of d_model 512 x 16 layers (28.2M parameters with its 2,048-token vocabulary),
            pretrained on a harder world (4 x 4 grid, 2-9 objects, more text) drawn in the "varied" style,
            its evaluation sets also drawn in the held-out "light" style. Its step counts are sized for a build of
            minutes on one GPU; build.json records the measured seconds of each part.

Cache: ``$QMAMBA_CACHE`` (default ``~/.cache/qmamba``) / ``micro-<size>``; ``--out`` overrides it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from qmamba.errors import ConfigError

CACHE_ENV = "QMAMBA_CACHE"


@dataclass(frozen=True)
class MicroSize:
    """One size of the micro backbones.

    ``vision_tower`` / ``text_tower``: SigLIP vision and text config fields; ``image_size`` of the vision tower
    is the encoder's resolution. ``lm``: fields of ``MambaLMConfig`` over the ``micro-mamba`` preset.
    ``world``: keyword arguments of ``synthesize`` for the pretraining world (its sizes: ``world_size``).
    ``lm_train`` / ``vision_train``: fields of ``LMTrainConfig`` / ``VisionTrainConfig``. ``gates``: measured
    figure -> the least the build must reach (checked and printed; None: no gates). ``size_limit``: bytes the
    build may take (None: no limit, the build is not shipped). ``probe``: scenes and steps of the encoder probe.
    """

    name: str
    vision_tower: dict
    text_tower: dict
    lm: dict
    world: dict
    world_size: int
    vocab_size: int
    lm_train: dict
    vision_train: dict
    gates: dict | None = None
    size_limit: int | None = 20_000_000
    probe: dict = field(default_factory=lambda: {"n_train": 2000, "n_test": None, "steps": 300})
    eval_images: int = 200  # per evaluation set of the pretraining world (the gates read them)


SIGLIP_SMALL = {"hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 6, "num_attention_heads": 4,
                "patch_size": 8, "image_size": 128, "layer_norm_eps": 1e-6, "hidden_act": "gelu_pytorch_tanh"}
TEXT_SMALL = {"hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 4, "num_attention_heads": 4,
              "hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-6}

SMALL = MicroSize(
    "small", vision_tower=SIGLIP_SMALL, text_tower=TEXT_SMALL,
    lm={"d_model": 512, "n_layer": 16, "ssm_cfg": {"d_state": 16}},
    world={"image_size": 128, "grid": 4, "min_objects": 2, "max_objects": 9, "text_prob": 0.2, "style": "varied",
           "heldout_style": "light", "workers": 8},  # workers: rendering processes (same output)
    # The tunings at 5e-4 in batches of mixed kinds: at the tiny LM's 1e-3 in batches of one length (and so mostly
    # one kind) the second GPU build's tuning loss stayed flat and its LM forgot its text (benchmarks/RESULTS.md,
    # "The small tier's build", which also gives the step rates that keep the build near 10 minutes);
    # benchmarks/micro_lm_sweep.py compares recipes on the gates.
    world_size=12000, vocab_size=2048,
    lm_train={"steps": 1200, "batch_size": 32, "micro_batch_size": 0, "seq_len": 512, "lr": 1.5e-3,
              "sft_steps": 1100, "sft_batch_size": 64, "sft_lr": 5e-4, "sft_max_len": 768, "sft_length_window": 0,
              "choice_sft_steps": 450, "choice_sft_lr": 3e-4, "eval_questions": 400},
    vision_train={"steps": 1800, "batch_size": 256, "lr": 1e-3, "text_len": 128, "heldout": 1024,
                  "eval_batch": 64, "aux_weight": 1.0},
    gates={"lm_grounded": 0.95, "lm_mmbench_circular": 0.90, "probe_shape": 0.95, "probe_color": 0.95,
           "probe_position": 0.95},
    size_limit=None,
)

SIZES = {"small": SMALL}


def get_size(name: str) -> MicroSize:
    if name not in SIZES:
        raise ConfigError(f"unknown micro size {name!r}; known: tiny (the shipped backbones), {', '.join(SIZES)}")
    return SIZES[name]


def cache_dir(size: str) -> Path:
    """Where ``size``'s backbones are built on first use: ``$QMAMBA_CACHE/micro-<size>``."""
    root = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "qmamba").expanduser()
    return root / f"micro-{size}"


def is_built(folder: str | Path) -> bool:
    """Whether ``folder`` holds a finished build (the build moves build.json in last)."""
    folder = Path(folder)
    return all((folder / name).exists() for name in ("siglip", "mamba", "build.json"))
