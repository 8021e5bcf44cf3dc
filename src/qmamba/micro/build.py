"""``build_micro_assets``: the micro-world's pretrained backbones, reproducibly, in one call.

    record = build_micro_assets("src/qmamba/assets/micro", seed=0)     # qmamba micro build --out ...

Steps: generate a synth world for pretraining (its own seed, ``seed + WORLD_SEED_OFFSET``, so the backbones
never see the training images of a default world of seed ``seed``; evaluation scenes are held out of every
world by construction) -> its text corpus -> the BPE tokenizer -> the SigLIP encoder -> the Mamba LM.

Writes ``out_dir/siglip/``, ``out_dir/mamba/`` (weights in fp32 safetensors, tokenizer in both),
``out_dir/build.json`` (every setting and measurement, library versions) and ``out_dir/README.md``,
and fails if they take more than ``report.SIZE_LIMIT`` bytes. Everything is built in a staging folder
inside ``out_dir`` and moved into place at the end, so a failed build leaves an earlier one intact.
Deterministic for a seed on one device (timings aside). On a GPU the encoder trains in a second process while
the LM trains in this one (``concurrent``): neither depends on the other, each seeds itself as it starts, and
two small models leave most of a GPU idle, so the build takes about as long as the longer of the two.

``size`` (a ``sizes.MicroSize``; None: the tiny, shipped backbones) sets the towers, the LM's shape, the
pretraining world, both trainings, the size budget and the gates: for a size with gates, the build measures
them on the staged backbones (``gates.measure_gates``) and records them under ``gates`` in build.json.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from qmamba.data.synth.manifest import MANIFEST, SynthManifest
from qmamba.errors import ConfigError
from qmamba.micro import report
from qmamba.micro.corpus import build_corpus, corpus_stats
from qmamba.micro.loop import pick_device
from qmamba.micro.pretrain_lm import LMTrainConfig, pretrain_lm
from qmamba.micro.pretrain_vision import VisionTrainConfig, pretrain_vision
from qmamba.micro.report import check_size, file_sizes, readme, versions
from qmamba.micro.sizes import MicroSize, cache_dir, get_size, is_built
from qmamba.micro.tokenizer import SPECIAL_TOKENS, check_tokenizer, train_tokenizer
from qmamba.utils.config import write_json

log = logging.getLogger("qmamba")

OUTPUTS = ("siglip", "mamba", "build.json", "README.md")
WORLD_SEED_OFFSET = 1000
EVAL_IMAGES = 4  # the generator always writes evaluation sets; the build never reads them


def build_micro_assets(out_dir: str | Path, seed: int = 0, device: str | torch.device | None = None,
                       world_size: int = 4000, lm_steps: int = 900, vision_steps: int = 600,
                       world_dir: str | Path | None = None, vocab_size: int = 1024, show_progress: bool = True,
                       overwrite: bool = False, lm_config: LMTrainConfig | None = None,
                       vision_config: VisionTrainConfig | None = None, size: MicroSize | None = None,
                       concurrent: bool | None = None) -> dict:
    """Build the micro backbones into ``out_dir``; returns the build record (also ``build.json``).

    ``world_size``: align and finetune images of the generated world (ignored when ``world_dir`` holds a
    world already, which is then used as it is; a ``world_dir`` without one receives the generated world,
    else it lives in a temporary folder). ``lm_steps`` / ``vision_steps``: optimizer steps of each model;
    ``lm_config`` / ``vision_config``, when given, set everything about that model's training instead.
    ``size``: another size than tiny; its settings replace ``world_size``, ``vocab_size`` and the step counts
    (``lm_config`` / ``vision_config`` still win when given). ``concurrent``: train the encoder in a second
    process beside the LM (None: on a GPU); the same weights as one after the other.
    """
    start = time.perf_counter()
    out = _check_out(Path(out_dir), overwrite)
    device = pick_device(device)
    seconds: dict[str, float] = {}
    world = {"size": world_size, "eval": EVAL_IMAGES, "settings": {}}
    if size is not None:
        world = size_world(size)
        vocab_size = size.vocab_size
        vision_config = vision_config or VisionTrainConfig(**size.vision_train, seed=seed)
        lm_config = lm_config or LMTrainConfig(**size.lm_train, seed=seed)
    lm_config = lm_config or LMTrainConfig(steps=lm_steps, seed=seed)
    with pretraining_world(world_dir, seed + WORLD_SEED_OFFSET, world, show_progress) as manifest, \
            tempfile.TemporaryDirectory(prefix=".micro-build-", dir=out) as staging:
        stage = Path(staging)  # the outputs are moved into ``out`` only once all of them are good
        seconds["world"] = time.perf_counter() - start
        log.info("micro build: world ready in %.1f s", seconds["world"])
        docs = build_corpus(manifest, lm_config.drill_rounds)
        log.info("micro build: corpus of %d documents in %.1f s", len(docs),
                 time.perf_counter() - start - seconds["world"])
        tokenizer = train_tokenizer([d.text for d in docs], vocab_size)
        check_tokenizer(tokenizer)
        seconds["tokenizer"] = time.perf_counter() - start - seconds["world"]
        log.info("micro build: corpus and tokenizer in %.1f s", seconds["tokenizer"])
        vision_config = vision_config or VisionTrainConfig(steps=vision_steps, seed=seed)
        towers = None if size is None else (size.vision_tower, size.text_tower)
        vision_args = (manifest, tokenizer, stage / "siglip", vision_config, device, show_progress, towers)
        lm_args = (docs, tokenizer, stage / "mamba", lm_config, device, show_progress,
                   None if size is None else size.lm)
        vision, lm = _train_both(vision_args, lm_args, device.type == "cuda" if concurrent is None else concurrent)
        seconds.update(vision=vision["seconds"], lm=lm["seconds"], total=time.perf_counter() - start)
        record = {"format": "qmamba-micro-assets-1", "seed": seed, "device": str(device),
                  "threads": torch.get_num_threads(), "world": _world_record(manifest, world_dir),
                  "corpus": {"documents": corpus_stats(docs), "characters": sum(len(d.text) for d in docs)},
                  "tokenizer": {"vocab_size": len(tokenizer), "requested_vocab_size": vocab_size,
                                "special_tokens": {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}},
                  "vision": vision, "lm": lm, "seconds": seconds, "versions": versions()}
        if size is not None:
            record["size"] = size.name
            if size.gates:
                from qmamba.micro.gates import measure_gates

                log.info("micro build: language model in %.1f s; measuring the gates", lm["seconds"])
                record["gates"] = measure_gates(stage, manifest, size, lm, device)
            seconds["total"] = time.perf_counter() - start
            log.info("micro build: done in %.1f s", seconds["total"])
        _finish(stage, record, size.size_limit if size is not None else report.SIZE_LIMIT)
        _install(stage, out)
    return record


def _train_both(vision_args: tuple, lm_args: tuple, concurrent: bool) -> tuple[dict, dict]:
    """``pretrain_vision(*vision_args)`` and ``pretrain_lm(*lm_args)``: one after the other, or with
    ``concurrent`` the encoder in a spawned process (a fresh interpreter: no CUDA state shared by a fork) while
    the LM trains here. Returns both records."""
    if not concurrent:
        vision = pretrain_vision(*vision_args)
        log.info("micro build: vision encoder in %.1f s", vision["seconds"])
        return vision, pretrain_lm(*lm_args)
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        child = pool.submit(_vision_process, *vision_args)
        log.info("micro build: vision encoder training in a second process, beside the language model")
        lm = pretrain_lm(*lm_args)
        vision = child.result()  # its exception, if it failed, is raised here
    log.info("micro build: vision encoder in %.1f s (beside the language model)", vision["seconds"])
    return vision, lm


def _vision_process(*args) -> dict:
    from qmamba.utils.log import setup_logging

    setup_logging()  # a spawned interpreter: its progress lines go to the same stderr
    return pretrain_vision(*args)


def _check_out(out: Path, overwrite: bool) -> Path:
    """Refuse to replace an earlier build unless ``overwrite`` (checked before any work starts)."""
    existing = [name for name in OUTPUTS if (out / name).exists()]
    if existing and not overwrite:
        raise ConfigError(f"{out} already holds {', '.join(existing)}: pass overwrite=True (--overwrite) "
                          f"or another --out")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _install(stage: Path, out: Path) -> None:
    """Replace ``out``'s outputs with the staged ones (an earlier build survives a failed one)."""
    for name in OUTPUTS:
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        (stage / name).rename(target)


def size_world(size: MicroSize) -> dict:
    """``pretraining_world``'s ``world`` for ``size``: its images per set, per evaluation set and settings."""
    return {"size": size.world_size, "eval": size.eval_images, "settings": size.world}


@contextlib.contextmanager
def pretraining_world(world_dir, seed: int, world: dict, show_progress: bool) -> Iterator[SynthManifest]:
    """The world to pretrain on: an existing one in ``world_dir``, or a new one there or in a temp folder
    (``world``: its ``size`` per training set, ``eval`` images per evaluation set, other ``settings``)."""
    from qmamba.data.synth import synthesize

    if world_dir is not None and (Path(world_dir) / MANIFEST).is_file():
        yield SynthManifest.load(world_dir)
        return
    size = world["size"]
    if size < 1:
        raise ConfigError(f"world_size={size}: the pretraining world needs at least one image per set")
    with contextlib.ExitStack() as stack:
        root = Path(world_dir) if world_dir is not None else Path(stack.enter_context(
            tempfile.TemporaryDirectory(prefix="qmamba-micro-world-")))
        yield synthesize(root, seed=seed, n_align=size, n_finetune=size, n_eval=world["eval"],
                         progress=show_progress, **world["settings"])


def _world_record(manifest: SynthManifest, world_dir) -> dict:
    return {"dir": str(manifest.root) if world_dir is not None else None, "seed": manifest.seed,
            "n_align": manifest.counts.get("align"), "n_finetune": manifest.counts.get("finetune"),
            "image_size": manifest.config.get("image_size"), "grid": manifest.config.get("grid")}


def _finish(stage: Path, record: dict, limit: int | None) -> None:
    """Write build.json and README.md into ``stage``, then check the size budget (``limit`` bytes, None: no
    budget) of all the outputs."""
    sizes = file_sizes(stage, ("siglip", "mamba"))
    record["files"] = sizes
    record["total_bytes"] = sum(sizes.values())  # weights + tokenizers; README and build.json add a few kB
    (stage / "README.md").write_text(readme(record), encoding="utf-8")
    write_json(stage / "build.json", record)
    if limit is not None:
        check_size(file_sizes(stage, OUTPUTS), limit)


def backbones(size: str, folder: str | Path | None = None, device=None, build: bool = True, say=print,
              **build_kwargs) -> Path:
    """The folder of ``size``'s backbones (``folder`` or ``cache_dir(size)``), built there on first use.

    Says which folder it uses, and when it builds; ``build=False`` raises instead of building.
    ``build_kwargs`` go to ``build_micro_assets`` (e.g. ``seed``, ``show_progress``).
    """
    folder = Path(folder) if folder is not None else cache_dir(size)
    if is_built(folder):
        say(f"using the {size} micro backbones in {folder}")
        return folder
    command = f"qmamba micro build --size {size} --device cuda" + (f" --out {folder}" if folder != cache_dir(size)
                                                                      else "")
    if not build:
        raise ConfigError(f"the {size} micro backbones are not built in {folder}: run '{command}' first")
    say(f"building the {size} micro backbones into {folder} (first use; '{command}' does the same)")
    build_micro_assets(folder, size=get_size(size), device=device, overwrite=True, **build_kwargs)
    return folder
