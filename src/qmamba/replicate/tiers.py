"""The sizes a replication runs at: which backbones, how large a micro-world, how long each stage trains.

    tiny   qmamba's shipped micro backbones (64 px SigLIP-architecture encoder, 8 px patches: 64 patches;
           micro Mamba LM) on the quickstart's world and schedule; runs on CPU, faster on a GPU
    small  the backbones of 'qmamba micro build --size small' (128 px encoder, 16 x 16 = 256 patches; a 28M-parameter
           Mamba LM) from their cache folder (``qmamba.micro.sizes.cache_dir``), for one GPU

A tier is data: the driver reads nothing else to decide sizes, so a test shrinks a tier with
``dataclasses.replace`` and runs the same code path as a real replication.
"""

from __future__ import annotations

from dataclasses import dataclass

from qmamba.errors import ConfigError
from qmamba.micro.sizes import cache_dir, is_built


@dataclass(frozen=True)
class Tier:
    """Backbones, world and schedule of one replication size.

    ``n_patches``: visual features per image from ``vision`` (the paper's 729 for 384 px / 14 px patches);
    query counts are scaled from the paper's 128/256/512/729 of 729 to this number. ``missing``: why the tier
    cannot run yet (None when it can).
    """

    name: str
    llm: str
    vision: str
    n_patches: int
    n_align: int = 3000
    n_finetune: int = 3000
    n_eval: int = 100
    world_seed: int = 0  # the world is shared by every run and seed; seeds vary initialisation and data order
    align_epochs: float = 1.0
    finetune_epochs: float = 2.0
    align_lr: float = 1e-3
    finetune_lr: float = 1e-3
    optimizer: str = "adamw"
    batch_size: int = 32
    max_steps: int | None = None  # per stage; None: the epochs decide
    checkpoint_every_steps: int = 100
    eval_batch_size: int = 64
    max_new_tokens: int = 16
    missing: str | None = None

    def check(self) -> None:
        if self.missing:
            raise ConfigError(f"tier {self.name!r} cannot run yet: {self.missing}")


TIERS: dict[str, Tier] = {
    "tiny": Tier("tiny", llm="assets:micro/mamba", vision="assets:micro/siglip", n_patches=64),
    "small": Tier(
        "small", llm=str(cache_dir("small") / "mamba"), vision=str(cache_dir("small") / "siglip"), n_patches=256,
        missing=None if is_built(cache_dir("small")) else (
            f"its backbones are not built in {cache_dir('small')}: run 'qmamba micro build --size small "
            f"--device cuda' first")),
}


def get_tier(name: str) -> Tier:
    if name not in TIERS:
        raise ConfigError(f"unknown tier {name!r}; known: {', '.join(TIERS)}")
    return TIERS[name]
