"""Several language-model recipes of one micro size, trained at once on one world and scored on the build's LM gates
(the scene given in words): how a size's ``lm_train`` is chosen (``benchmarks/micro_lm_sweep.py`` prints the table).

    sweep(out, {"base": {}, "slow": {"sft_lr": 5e-4}}, get_size("small"), jobs=4)   # <out>/<name>/result.json
    sweep(out, {"state64": {"lm": {"ssm_cfg": {"d_state": 64}}}, "six": {"world": {"max_objects": 6}}}, size)

The world is the size's pretraining world, drawn once into ``<out>/world`` as ``qmamba micro build`` draws it (same
seed), with its BPE tokenizer in ``<out>/tokenizer``; each recipe (``LMTrainConfig`` fields over the size's own)
trains in its own spawned process, then writes ``<out>/<name>/result.json``: its settings, seconds, the LM record
of ``pretrain_lm`` and ``gates.lm_gates``. Recipes with a result are skipped, so a killed sweep resumes.

Two keys of a recipe are not training fields: ``lm``, ``MambaLMConfig`` fields over the size's LM shape
(``ssm_cfg`` merged key by key: ``{"ssm_cfg": {"d_state": 64}}`` keeps the size's other mixer settings), and
``world``, ``synthesize`` settings over the size's world. A recipe with its own world trains and is scored on it:
drawn once per distinct setting into ``<out>/world-<digest>``, beside its own tokenizer.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

from qmamba.errors import ConfigError
from qmamba.micro.sizes import MicroSize

log = logging.getLogger("qmamba")


def sweep(out: str | Path, recipes: dict[str, dict], size: MicroSize, seed: int = 0, jobs: int = 4,
          device: str | None = None, train=None) -> list[str]:
    """Train and score every recipe of ``recipes`` ({name: LMTrainConfig overrides}) without a result in ``out``,
    ``jobs`` processes at once; returns the names that failed (each logged with its error; the others go on).
    A recipe that ran out of GPU memory beside the others is tried once more at the end, alone. ``train``: the
    function each process runs (``train_recipe``; tests pass another)."""
    out = Path(out)
    check_recipes(recipes, size)
    todo = {n: o for n, o in recipes.items() if not (out / n / "result.json").is_file()}
    if not todo:
        return []
    for world in {json.dumps(o.get("world", {}), sort_keys=True) for o in todo.values()}:
        prepare(out, size, seed, json.loads(world))
    log.info("lm sweep: %d recipe(s), %d at a time", len(todo), jobs)
    train = train or train_recipe
    failed = _run(train, out, todo, size, seed, jobs, device)
    crowded = {n: todo[n] for n, error in failed.items() if "out of memory" in error.lower()}
    if crowded:
        log.info("lm sweep: %s ran out of GPU memory beside the others; again, one at a time", ", ".join(crowded))
        again = _run(train, out, crowded, size, seed, 1, device)
        failed = {n: e for n, e in failed.items() if n not in crowded} | again
    return sorted(failed)


def _run(train, out: Path, todo: dict[str, dict], size: MicroSize, seed: int, jobs: int,
         device: str | None) -> dict[str, str]:
    """``train`` for every recipe of ``todo`` in ``jobs`` spawned processes; returns {failed name: its error}."""
    failed = {}
    with ProcessPoolExecutor(min(jobs, len(todo)), mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(train, out, n, o, size, seed, device): n for n, o in todo.items()}
        for future in as_completed(futures):
            try:
                log.info("lm sweep: %s done in %.0f s", futures[future], future.result()["seconds"])
            except Exception as e:
                log.error("lm sweep: %s failed: %s", futures[future], e)
                failed[futures[future]] = str(e)
    return failed


def check_recipes(recipes: dict[str, dict], size: MicroSize) -> None:
    """Every key a known setting and every LM shape valid, before anything is drawn or trained (a ConfigError names
    the recipe and the setting)."""
    import dataclasses

    from qmamba.data.synth.pipeline import synthesize
    from qmamba.micro.pretrain_lm import LMTrainConfig
    from qmamba.models.mamba_lm import MambaLMConfig
    from qmamba.models.presets import LLM_PRESETS

    known = {"training": {f.name for f in dataclasses.fields(LMTrainConfig)} | {"lm", "world"},
             "lm": {f.name for f in dataclasses.fields(MambaLMConfig)},
             "world": set(inspect.signature(synthesize).parameters) - {"out_dir", "seed", "n_align", "n_finetune",
                                                                   "n_eval", "progress"}}
    for name, recipe in recipes.items():
        for part, keys in (("training", recipe), ("lm", recipe.get("lm", {})), ("world", recipe.get("world", {}))):
            unknown = sorted(set(keys) - known[part])
            if unknown:
                where = "" if part == "training" else f'"{part}": '
                raise ConfigError(f"sweep recipe {name!r}: unknown {part} setting(s) {unknown} in {where}"
                                  f"{json.dumps(keys)}; expected some of {sorted(known[part])}")
        training = {k: v for k, v in recipe.items() if k not in ("lm", "world")}
        try:  # the values too, as the recipe's process will read them
            LMTrainConfig(**{**size.lm_train, **training})
        except ConfigError as e:
            raise ConfigError(f"sweep recipe {name!r}, its training: {e}") from None
        try:
            dataclasses.replace(LLM_PRESETS["micro-mamba"](), **lm_shape(size, recipe.get("lm", {})))
        except ConfigError as e:
            raise ConfigError(f"sweep recipe {name!r}, its \"lm\" shape: {e}") from None


def world_dirs(out: Path, world: dict) -> tuple[Path, Path]:
    """(world folder, tokenizer folder) of a recipe's ``world`` settings: the size's own ({}) or a drawn variant."""
    if not world:
        return out / "world", out / "tokenizer"
    variant = out / f"world-{hashlib.sha1(json.dumps(world, sort_keys=True).encode()).hexdigest()[:8]}"
    return variant, variant / "tokenizer"


def prepare(out: Path, size: MicroSize, seed: int, world: dict | None = None) -> None:
    """A world, drawn once, and its tokenizer, trained once (``world_dirs``); ``world``: settings over the size's."""
    from qmamba.micro.build import WORLD_SEED_OFFSET, pretraining_world, size_world
    from qmamba.micro.corpus import build_corpus
    from qmamba.micro.tokenizer import check_tokenizer, save_tokenizer, train_tokenizer

    world = world or {}
    world_dir, tok_dir = world_dirs(out, world)
    settings = size_world(size)
    settings["settings"] = {**settings["settings"], **world}
    with pretraining_world(world_dir, seed + WORLD_SEED_OFFSET, settings, True) as manifest:
        if not tok_dir.is_dir():
            tokenizer = train_tokenizer([d.text for d in build_corpus(manifest)], size.vocab_size)
            check_tokenizer(tokenizer)
            save_tokenizer(tokenizer, tok_dir)


def lm_shape(size: MicroSize, shape: dict) -> dict:
    """The size's LM shape with a recipe's ``lm`` fields over it (``ssm_cfg`` merged key by key)."""
    merged = {**size.lm, **shape}
    if "ssm_cfg" in shape:
        merged["ssm_cfg"] = {**size.lm.get("ssm_cfg", {}), **shape["ssm_cfg"]}
    return merged


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
    world_dir, tok_dir = world_dirs(out, overrides.get("world", {}))
    manifest = SynthManifest.load(world_dir)
    training = {k: v for k, v in overrides.items() if k not in ("lm", "world")}
    cfg = LMTrainConfig(**{**size.lm_train, **training, "seed": seed})
    lm_dir = out / name / "mamba"
    record = pretrain_lm(build_corpus(manifest, cfg.drill_rounds), load_tokenizer(tok_dir), lm_dir, cfg, device,
                         show_progress=False, shape=lm_shape(size, overrides.get("lm", {})))
    result = {"name": name, "overrides": overrides, "device": str(device), "lm": record,
              "gates": lm_gates(lm_dir, manifest, record, device), "seconds": time.perf_counter() - start}
    write_json(out / name / "result.json", result)
    return result
