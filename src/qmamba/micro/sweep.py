"""Several language-model recipes of one micro size, trained at once on one world and scored on the build's LM gates
(the scene given in words): how a size's ``lm_train`` is chosen (``benchmarks/micro_lm_sweep.py`` prints the table).

    sweep(out, {"base": {}, "slow": {"sft_lr": 5e-4}}, get_size("small"), jobs=4)   # <out>/<name>/result.json

The world is the size's pretraining world, drawn once into ``<out>/world`` as ``qmamba micro build`` draws it (same
seed), with its BPE tokenizer in ``<out>/tokenizer``; each recipe (``LMTrainConfig`` fields over the size's own)
trains in its own spawned process, then writes ``<out>/<name>/result.json``: its settings, seconds, the LM record
of ``pretrain_lm`` and ``gates.lm_gates``. Recipes with a result are skipped, so a killed sweep resumes.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

from qmamba.micro.sizes import MicroSize

log = logging.getLogger("qmamba")


def sweep(out: str | Path, recipes: dict[str, dict], size: MicroSize, seed: int = 0, jobs: int = 4,
          device: str | None = None) -> list[str]:
    """Train and score every recipe of ``recipes`` ({name: LMTrainConfig overrides}) without a result in ``out``,
    ``jobs`` processes at once; returns the names that failed (each logged with its error; the others go on)."""
    out = Path(out)
    todo = {n: o for n, o in recipes.items() if not (out / n / "result.json").is_file()}
    if not todo:
        return []
    prepare(out, size, seed)
    log.info("lm sweep: %d recipe(s), %d at a time", len(todo), jobs)
    failed = []
    with ProcessPoolExecutor(min(jobs, len(todo)), mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(train_recipe, out, n, o, size, seed, device): n for n, o in todo.items()}
        for future in as_completed(futures):
            try:
                log.info("lm sweep: %s done in %.0f s", futures[future], future.result()["seconds"])
            except Exception as e:
                log.error("lm sweep: %s failed: %s", futures[future], e)
                failed.append(futures[future])
    return failed


def prepare(out: Path, size: MicroSize, seed: int) -> None:
    """The world, drawn once, and its tokenizer, trained once (``<out>/world``, ``<out>/tokenizer``)."""
    from qmamba.micro.build import WORLD_SEED_OFFSET, pretraining_world, size_world
    from qmamba.micro.corpus import build_corpus
    from qmamba.micro.tokenizer import check_tokenizer, save_tokenizer, train_tokenizer

    with pretraining_world(out / "world", seed + WORLD_SEED_OFFSET, size_world(size), True) as manifest:
        if not (out / "tokenizer").is_dir():
            tokenizer = train_tokenizer([d.text for d in build_corpus(manifest)], size.vocab_size)
            check_tokenizer(tokenizer)
            save_tokenizer(tokenizer, out / "tokenizer")


def train_recipe(out: Path, name: str, overrides: dict, size: MicroSize, seed: int, device: str | None) -> dict:
    """One recipe (in its own process): train, score the LM gates, write ``<out>/<name>/result.json``."""
    from qmamba.data.synth.manifest import SynthManifest
    from qmamba.data.tokenizer import load_tokenizer
    from qmamba.micro.corpus import build_corpus
    from qmamba.micro.gates import lm_gates
    from qmamba.micro.loop import pick_device
    from qmamba.micro.pretrain_lm import LMTrainConfig, pretrain_lm
    from qmamba.utils.config import write_json
    from qmamba.utils.log import setup_logging

    setup_logging()
    start = time.perf_counter()
    device = pick_device(device)
    manifest = SynthManifest.load(out / "world")
    cfg = LMTrainConfig(**{**size.lm_train, **overrides, "seed": seed})
    lm_dir = out / name / "mamba"
    record = pretrain_lm(build_corpus(manifest), load_tokenizer(out / "tokenizer"), lm_dir, cfg, device,
                         show_progress=False, shape=size.lm)
    result = {"name": name, "overrides": overrides, "device": str(device), "lm": record,
              "gates": lm_gates(lm_dir, manifest, record, device), "seconds": time.perf_counter() - start}
    write_json(out / name / "result.json", result)
    return result
