"""One cell of a replication, end to end: the shared micro-world, the training it needs (and the VL-Mamba
training its preprocessing starts from), the six micro-benchmarks, and the cell's result file.

    <out>/world/                               the tier's micro-world, generated once (every seed reads it)
    <out>/train/<spec>/seed<k>/                a two-stage training run (align, finetune), shared by cells
    <out>/eval/<eval key>/seed<k>/             <task>/ (qmamba eval's files), model/ (inference overrides),
                                               style-<name>/<task>/ (the held-out style's, where the tier has
                                               one), scores.json; shared by cells with the same training and
                                               overrides
    <out>/runs/<experiment>/<variant>/seed<k>/ result.json, the cell's record

Every step resumes: the world is written to a temporary directory and renamed when whole, training resumes
from its own checkpoints and skips finished stages, evaluation appends answers batch by batch, and
scores.json and result.json are written atomically last, so a cell with a result file is finished.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import time
from pathlib import Path

from qmamba.errors import ConfigError
from qmamba.quickstart import TASKS, QuickstartConfig, eval_job, train_config
from qmamba.replicate.backbones import backbones_record
from qmamba.replicate.registry import Cell, TrainSpec
from qmamba.replicate.tiers import Tier

log = logging.getLogger("qmamba")
RESULT = "result.json"


def write_json_atomic(path: Path, data: dict) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def world_settings(tier: Tier) -> dict:
    """What the world under ``<out>/world`` was made with: its sizes, seed and the tier's world arguments
    (rendering ``workers`` aside: they do not change the images)."""
    extra = {k: v for k, v in (tier.world or {}).items() if k != "workers"}
    return {"n_align": tier.n_align, "n_finetune": tier.n_finetune, "n_eval": tier.n_eval, "seed": tier.world_seed,
            **extra}


def ensure_world(out: Path, tier: Tier):
    """The tier's micro-world under ``<out>/world``: loaded when it is there with the same settings, else made."""
    from qmamba.data.synth import SynthManifest, synthesize
    from qmamba.data.synth.manifest import MANIFEST

    world, marker = out / "world", out / "world" / "replicate_world.json"
    want = world_settings(tier)
    if marker.is_file() and (world / MANIFEST).is_file():  # a marker alone (records carried elsewhere): remake
        have = json.loads(marker.read_text())
        if have != want:
            raise ConfigError(f"{world} was generated with {have}, this tier needs {want}: use another --out")
        return SynthManifest.load(world)
    tmp = out / "world.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    log.info("replicate: generating the %s micro-world into %s", tier.name, world)
    synthesize(tmp, seed=tier.world_seed, n_align=tier.n_align, n_finetune=tier.n_finetune, n_eval=tier.n_eval,
               overwrite=True, **(tier.world or {}))
    write_json_atomic(tmp / marker.name, want)
    shutil.rmtree(world, ignore_errors=True)
    os.replace(tmp, world)
    return SynthManifest.load(world)


def train_dir(out: Path, spec: TrainSpec, seed: int) -> Path:
    return out / "train" / spec.key / f"seed{seed}"


def trained_model(out: Path, spec: TrainSpec, seed: int) -> Path:
    return train_dir(out, spec, seed) / "1-finetune" / "model"


def run_config(out: Path, tier: Tier, spec: TrainSpec, seed: int, device: str | None,
               preprocess_init: Path | None) -> dict:
    """The ``qmamba train`` config of ``spec`` at ``seed``: the quickstart's two stages at the tier's sizes."""
    q = QuickstartConfig(out=str(out), preset=spec.preset, seed=seed, n_align=tier.n_align,
                         n_finetune=tier.n_finetune, n_eval=tier.n_eval, align_epochs=tier.align_epochs,
                         finetune_epochs=tier.finetune_epochs, align_lr=tier.align_lr, finetune_lr=tier.finetune_lr,
                         optimizer=tier.optimizer, align_batch_size=tier.batch_size,
                         finetune_batch_size=tier.batch_size, device=device)
    cfg = train_config(q, out / "world")
    cfg["model"].update(llm=tier.llm, vision=tier.vision, connector=copy.deepcopy(spec.connector))
    if preprocess_init is not None:
        cfg["model"]["preprocess_init"] = str(preprocess_init)
    for stage in cfg["stages"]:
        stage["max_steps"] = tier.max_steps
    cfg["run"].update(output_dir=str(train_dir(out, spec, seed)), checkpoint_every_steps=tier.checkpoint_every_steps)
    return cfg


def ensure_trained(out: Path, tier: Tier, spec: TrainSpec, seed: int, device: str | None) -> Path:
    """The finetuned model of ``spec`` at ``seed`` (its VL-Mamba source first): found, resumed or trained."""
    from qmamba.train.config import parse_config
    from qmamba.train.runner import train

    model = trained_model(out, spec, seed)
    if (model.parent / "DONE").is_file() and (model / "config.json").is_file():
        return model
    source = ensure_trained(out, tier, spec.preprocess_from, seed, device) if spec.preprocess_from else None
    log.info("replicate: training %s seed %d", spec.key, seed)
    return train(parse_config(run_config(out, tier, spec, seed, device, source), f"replicate {spec.key}"))


def merged(base: dict, overrides: dict) -> dict:
    """``base`` with ``overrides`` merged in, nested dicts merged key by key."""
    out = dict(base)
    for key, value in overrides.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def inference_model(model: Path, target: Path, connector: dict) -> Path:
    """A model directory at ``target`` that is ``model`` with ``connector`` merged into its connector config
    (e.g. ``{"active_scans": ["forward"]}``); the other files are links to ``model``'s."""
    from qmamba.models.multimodal import MultimodalConfig

    config = json.loads((model / "config.json").read_text())
    config["connector"] = merged(config["connector"], connector)
    MultimodalConfig.from_dict(copy.deepcopy(config), f"{target}/config.json")  # a bad override fails here
    target.mkdir(parents=True, exist_ok=True)
    for f in model.iterdir():
        link = target / f.name
        if f.name != "config.json" and not link.exists():
            link.symlink_to(f.resolve())
    write_json_atomic(target / "config.json", config)
    return target


def cell_dir(out: Path, cell: Cell, seed: int) -> Path:
    return out / "runs" / cell.experiment / cell.variant / f"seed{seed}"


def eval_dir(out: Path, cell: Cell, seed: int) -> Path:
    return out / "eval" / cell.eval_key / f"seed{seed}"


def score_tasks(pipe, world, out_dir: Path, tier: Tier, model_id: str) -> dict:
    """The six micro-benchmarks of ``pipe`` on ``world``'s evaluation sets, answers under ``out_dir/<task>/``:
    {"scores": {task: main metric}, "pope_accuracy", "pope_f1_undefined"}."""
    from qmamba.eval.runner import run_eval

    scores, pope_accuracy, pope_f1_undefined = {}, None, False
    for task in TASKS:
        task_dir = run_eval(pipe, task, **eval_job(world, task), out_dir=out_dir, batch_size=tier.eval_batch_size,
                            max_new_tokens=tier.max_new_tokens, model_id=model_id, show_progress=False)
        metrics = json.loads((task_dir / "metrics.json").read_text())
        scores[task] = metrics.get("main")
        if task == "pope":  # F1 is undefined when no answer is "yes": recall 0, so F1 0 by the usual convention
            pope_accuracy = metrics["metrics"].get("accuracy_mean_of_splits")
            pope_f1_undefined, scores[task] = scores[task] is None, scores[task] or 0.0
    return {"scores": scores, "pope_accuracy": pope_accuracy, "pope_f1_undefined": pope_f1_undefined}


def evaluate(out: Path, tier: Tier, cell: Cell, seed: int, world, device: str | None) -> dict:
    """The six micro-benchmarks of the cell's model (shared by every cell with its ``eval_key``):
    {"model", "scores": {task: main metric}, "pope_accuracy", "pope_f1_undefined", "seconds"}, kept in
    ``scores.json``. A tier with a held-out style also scores its copies of the evaluation sets (answers under
    ``style-<name>/<task>/``) into "heldout_style" and "heldout": the same keys as above, less "model".
    "backbones": the fingerprint (and build gates) of the tier's backbones (``backbones.py``)."""
    from qmamba.pipeline import Pipeline

    here = eval_dir(out, cell, seed)
    if (here / "scores.json").is_file():
        return json.loads((here / "scores.json").read_text())
    t0 = time.perf_counter()
    model = ensure_trained(out, tier, cell.train, seed, device)
    t1 = time.perf_counter()
    if cell.infer:
        model = inference_model(model, here / "model", cell.infer)
    pipe = Pipeline.from_pretrained(model, device=device)
    done = {"model": str(model), "backbones": backbones_record(tier.llm, tier.vision),
            **score_tasks(pipe, world, here, tier, cell.eval_key)}
    style = tier.heldout_style
    if style is not None:
        done["heldout_style"] = style
        done["heldout"] = score_tasks(pipe, world.styled(style), here / f"style-{style}", tier, cell.eval_key)
    done["seconds"] = {"train_or_load": round(t1 - t0, 3), "eval": round(time.perf_counter() - t1, 3)}
    write_json_atomic(here / "scores.json", done)
    return done


def run_cell(out: Path, tier: Tier, cell: Cell, seed: int, world, device: str | None) -> dict:
    """Train (or find) the cell's model, score it (or find its scores), write and return its result.json."""
    scores = evaluate(out, tier, cell, seed, world, device)
    result = {"experiment": cell.experiment, "variant": cell.variant, "seed": seed, "label": cell.label,
              "tier": tier.name, "train": cell.train.key, "eval": cell.eval_key, "infer": cell.infer,
              "visual_tokens": cell.visual_tokens, **scores}
    write_json_atomic(cell_dir(out, cell, seed) / RESULT, result)
    return result
