"""The sizes a replication runs at: which backbones, how large a micro-world, how long each stage trains.

    tiny   qmamba's shipped micro backbones (64 px SigLIP-architecture encoder, 8 px patches: 64 patches;
           micro Mamba LM) on the quickstart's world; runs on CPU, faster on a GPU
    small  the backbones of 'qmamba micro build --size small' (128 px encoder, 16 x 16 = 256 patches; a 28M-parameter
           Mamba LM) from their cache folder (``qmamba.micro.sizes.cache_dir``), for one GPU, on the small
           build's world (``qmamba.micro.sizes.SMALL.world``: harder, drawn in the varied style) with every
           evaluation set also drawn in the held-out light style

A tier is data: the driver reads nothing else to decide sizes, so a test shrinks a tier with
``dataclasses.replace`` and runs the same code path as a real replication. Nothing here reads the disk or the
environment when imported: where a tier's backbones live and whether they are built is asked when it runs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from qmamba.errors import ConfigError
from qmamba.micro.sizes import SMALL, cache_dir, is_built
from qmamba.quickstart import QuickstartConfig

_QUICKSTART = QuickstartConfig()


@dataclass(frozen=True)
class Tier:
    """Backbones, world and schedule of one replication size.

    ``n_patches``: visual features per image from ``vision`` (the paper's 729 for 384 px / 14 px patches);
    query counts are scaled from the paper's 128/256/512/729 of 729 to this number. ``cache``: the micro size
    whose build in ``cache_dir(cache)`` holds the backbones; ``llm`` and ``vision`` are then folder names
    inside it (``resolved`` makes them paths). ``world``: keyword arguments of ``synthesize`` beyond the
    sizes (None: the default world); its ``heldout_style`` adds the held-out style's scores to every run.
    """

    name: str
    llm: str
    vision: str
    n_patches: int
    # the world's sizes are the quickstart's; the schedule is the replication's own (a directory pins it in
    # tier.json): longer than the CPU quickstart's, which is cut to fit a few minutes on 2 CPU cores
    n_align: int = _QUICKSTART.n_align
    n_finetune: int = _QUICKSTART.n_finetune
    n_eval: int = _QUICKSTART.n_eval
    world_seed: int = 0  # the world is shared by every run and seed; seeds vary initialisation and data order
    align_epochs: float = 1.0
    finetune_epochs: float = 2.0
    align_lr: float = 1e-3
    finetune_lr: float = 1e-3
    optimizer: str = "adamw"
    batch_size: int = 32  # both stages
    max_steps: int | None = None  # per stage; None: the epochs decide
    checkpoint_every_steps: int = 100
    eval_batch_size: int = 64
    max_new_tokens: int = 16
    cache: str | None = None
    world: dict | None = None

    @property
    def heldout_style(self) -> str | None:
        """The drawing style never seen in training that every run is also scored in (None: none)."""
        return (self.world or {}).get("heldout_style")

    def missing(self) -> str | None:
        """Why the tier cannot run now (None when it can); asks the disk each time, so a build made since
        counts."""
        if self.cache is None or is_built(cache_dir(self.cache)):
            return None
        return (f"its backbones are not built in {cache_dir(self.cache)}: run 'qmamba micro build --size "
                f"{self.cache} --device cuda' first")

    def check(self) -> None:
        reason = self.missing()
        if reason:
            raise ConfigError(f"tier {self.name!r} cannot run yet: {reason}")

    def resolved(self) -> Tier:
        """This tier with ``llm`` and ``vision`` as paths inside its cache folder (itself when it has none)."""
        if self.cache is None:
            return self
        folder = cache_dir(self.cache)
        return dataclasses.replace(self, llm=str(folder / self.llm), vision=str(folder / self.vision), cache=None)

    def settings(self) -> dict:
        """The fields a replication directory pins (``tier.json``) and the report states; ``cache`` and
        ``world`` only where set, so the tiny tier's settings read as they always have."""
        fields = dataclasses.asdict(self)
        return {k: v for k, v in fields.items() if not (k in ("cache", "world") and v is None)}


TIERS: dict[str, Tier] = {
    "tiny": Tier("tiny", llm="assets:micro/mamba", vision="assets:micro/siglip", n_patches=64),
    # finetune at the small LM's own tuning rate: at 1e-3 its build's tuning did not learn (micro/sizes.py)
    "small": Tier("small", llm="mamba", vision="siglip", n_patches=256, cache="small", world=dict(SMALL.world),
                  finetune_lr=5e-4),
}


def get_tier(name: str) -> Tier:
    if name not in TIERS:
        raise ConfigError(f"unknown tier {name!r}; known: {', '.join(TIERS)}")
    return TIERS[name]
