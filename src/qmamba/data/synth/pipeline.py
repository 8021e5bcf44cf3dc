"""``synthesize``: generate the whole micro-world (training data, six evaluation sets, manifest).

Layout of ``out_dir``::

    manifest.json                 counts, settings, every file's path
    align.json  finetune.json     LLaVA-format training conversations (image paths relative to images/)
    images/align/*.jpg  images/finetune/*.jpg
    scenes/align.json  scenes/finetune.json          ground-truth scene graphs
    eval/<task>/...               official-format files, LLaVA question jsonl, image folder, scenes.json
    eval-<style>/<task>/...       with ``heldout_style``: the same evaluation scenes and questions, drawn in a
                                  style never used for training (``SynthManifest.styled(style)`` reads them)

Streams: every scene has its own seeded generator (``scene.scene_rng``); align, finetune and each
evaluation task draw from different streams. Held out by construction: a fixed hash of the scene
graph assigns one graph in ``HELDOUT_MOD`` to evaluation (``is_heldout``); training streams redraw
such graphs and evaluation streams redraw all others. So no evaluation scene occurs in training
(for any seed), and the evaluation sets do not change with the training sizes.
"""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from qmamba.data.synth.conversations import align_record, finetune_record
from qmamba.data.synth.eval_sets import build_gqa, build_textvqa, build_vizwiz, build_vqav2
from qmamba.data.synth.families import Alternator
from qmamba.data.synth.files import write_images, write_json, write_scenes
from qmamba.data.synth.manifest import MANIFEST, SynthManifest
from qmamba.data.synth.mmbench import build_mmbench
from qmamba.data.synth.pope import POPE_K, build_pope
from qmamba.data.synth.scene import Scene, SceneSpec, sample_scene, scene_rng
from qmamba.data.synth.style import DrawStyle, get_style, restyle
from qmamba.errors import ConfigError

ALIGN_STREAM, FINETUNE_STREAM, QUESTION_OFFSET = 1, 2, 100
HELDOUT_MOD = 4  # 1 in 4 scene graphs is reserved for evaluation
STYLE_OFFSET = 200  # stream offset of the held-out style's redrawn backgrounds


def _textvqa_scenes(base: SceneSpec) -> SceneSpec:
    """TextVQA images carry at least one text object."""
    return replace(base, min_text=1, text_prob=max(base.text_prob, 0.35))


def _pope_scenes(base: SceneSpec) -> SceneSpec:
    """POPE images hold at least ``POPE_K`` distinct categories (its positives)."""
    most = min(base.grid * base.grid, max(POPE_K, base.max_objects + 1))
    return replace(base, min_objects=POPE_K, max_objects=most, min_categories=POPE_K)


@dataclass(frozen=True)
class EvalTask:
    """One evaluation set: its scene stream, image folder and naming, builder, scene settings."""

    name: str
    stream: int
    image_dir: str
    image_name: Callable[[int, str], str]
    build: Callable[..., dict]
    spec: Callable[[SceneSpec], SceneSpec] = lambda base: base


TASKS = (
    EvalTask("vqav2", 11, "val2014", lambda i, ext: f"COCO_val2014_{i + 1:012d}.{ext}", build_vqav2),
    EvalTask("gqa", 12, "images", lambda i, ext: f"n{i + 1:06d}.{ext}", build_gqa),
    EvalTask("vizwiz", 13, "val", lambda i, ext: f"VizWiz_val_{i:08d}.{ext}", build_vizwiz),
    EvalTask("textvqa", 14, "train_images", lambda i, ext: f"{i + 1:016x}.{ext}", build_textvqa, _textvqa_scenes),
    EvalTask("pope", 15, "val2014", lambda i, ext: f"COCO_val2014_{i + 1:012d}.{ext}", build_pope, _pope_scenes),
    EvalTask("mmbench", 16, "images", lambda i, ext: f"{i:06d}.{ext}", build_mmbench),
)
TASK_NAMES = tuple(t.name for t in TASKS)
_OUTPUTS = ("images", "scenes", "eval", "align.json", "finetune.json", MANIFEST)


def _style_dir(style: str) -> str:
    return f"eval-{style}"


def is_heldout(scene: Scene) -> bool:
    """Whether a scene graph belongs to the evaluation side of the fixed split of all scene graphs.

    A hash of the graph (not of the seed) decides, so no evaluation scene of any seed or size ever
    occurs in any training set, and each side does not depend on how many scenes the other has.
    """
    digest = hashlib.blake2b(repr(scene.signature()).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % HELDOUT_MOD == 0


def scenes_of(seed: int, stream: int, n: int, spec: SceneSpec, name: Callable[[int], str],
              heldout: bool) -> list[Scene]:
    """``n`` scenes of one stream, each redrawn until it is on the ``heldout`` side of the split."""
    out = []
    for i in range(n):
        for attempt in range(1000):
            scene = sample_scene(scene_rng(seed, stream, i, attempt), spec, name(i))
            if is_heldout(scene) == heldout:
                break
        else:
            raise ConfigError(f"could not draw a held-out scene {i} of stream {stream}: the world is too small")
        out.append(scene)
    return out


def _prepare(out: Path, overwrite: bool) -> None:
    existing = [p for p in _OUTPUTS if (out / p).exists()] + sorted(p.name for p in out.glob("eval-*"))
    if existing and not overwrite:
        raise ConfigError(f"{out} already holds {', '.join(existing)}: "
                          "pass overwrite=True (--overwrite) or a new --out")
    for name in existing:
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _check(n_align: int, n_finetune: int, eval_sizes: dict[str, int], image_format: str, turns) -> None:
    if min(n_align, n_finetune) < 0 or any(v < 1 for v in eval_sizes.values()):
        raise ConfigError(f"sizes must be >= 0 (align {n_align}, finetune {n_finetune}) and >= 1 per eval set "
                          f"({eval_sizes})")
    unknown = sorted(set(eval_sizes) - set(TASK_NAMES))
    if unknown:
        raise ConfigError(f"unknown evaluation sets {unknown}; known: {list(TASK_NAMES)}")
    if image_format not in ("png", "jpg"):
        raise ConfigError(f"image_format {image_format!r}: use 'jpg' (default) or 'png' (lossless)")
    if not 1 <= turns[0] <= turns[1]:
        raise ConfigError(f"turns {turns}: need 1 <= min <= max")


def synthesize(
    out_dir: str | Path,
    seed: int = 0,
    image_size: int = 64,
    grid: int = 3,
    n_align: int = 4000,
    n_finetune: int = 4000,
    n_eval: int = 200,
    eval_sizes: dict[str, int] | None = None,
    max_objects: int = 5,
    text_prob: float = 0.15,
    turns: tuple[int, int] = (3, 6),
    image_format: str = "jpg",
    workers: int = 0,
    overwrite: bool = False,
    progress: bool = False,
    style: str | DrawStyle | None = None,
    heldout_style: str | DrawStyle | None = None,
    min_objects: int = 1,
) -> SynthManifest:
    """Generate the micro-world into ``out_dir`` and return its manifest (also saved as manifest.json).

    The defaults (4000 + 4000 training and 6 x 200 evaluation images) take about 8 s on 2 CPU cores
    (5.5 s with ``workers=2``) and 57 MB of disk.
    ``n_eval`` is the number of images per evaluation set (``eval_sizes`` overrides it per task);
    ``workers`` > 1 renders images in that many processes (the output is identical).
    ``image_format`` "jpg" (default) names evaluation images as the official sets do
    (``COCO_val2014_<id>.jpg``, ``<imageId>.jpg``, ...), so loaders that derive image names from the
    official files find them; "png" is lossless (exact palette colours) but then only the LLaVA
    question files (whose ``image`` fields are authoritative) name the images correctly.
    ``style``: the drawing style of every scene (``style.STYLES``; default plain, today's world);
    ``heldout_style``: also write every evaluation set drawn in this style (same scenes and questions,
    background, noise and outline redrawn) under ``eval-<name>/``; it must differ from ``style``.
    ``min_objects`` / ``max_objects`` / ``grid`` / ``text_prob`` make a harder world (more objects,
    relations, larger counts, more reading); the defaults are the default world.
    """
    sizes = {t: n_eval for t in TASK_NAMES} | (eval_sizes or {})
    _check(n_align, n_finetune, sizes, image_format, tuple(turns))
    draw, held_style = get_style(style), None if heldout_style is None else get_style(heldout_style)
    if held_style is not None and held_style.name == draw.name:
        raise ConfigError(f"heldout_style {held_style.name!r} is the training style: choose another")
    spec = SceneSpec(image_size=image_size, grid=grid, min_objects=min_objects, max_objects=max_objects,
                     text_prob=text_prob, style=None if draw.plain else draw)
    out = Path(out_dir)
    _prepare(out, overwrite)
    config = {"image_size": image_size, "grid": grid, "n_align": n_align, "n_finetune": n_finetune,
              "eval_sizes": sizes, "max_objects": max_objects, "text_prob": text_prob, "turns": list(turns),
              "image_format": image_format}
    config |= {} if min_objects == 1 else {"min_objects": min_objects}  # the default world's record is unchanged
    config |= {} if draw.plain else {"style": draw.name}
    config |= {} if held_style is None else {"heldout_style": held_style.name}
    manifest = SynthManifest(out, seed, config)
    align = scenes_of(seed, ALIGN_STREAM, n_align, spec, lambda i: f"align/{i:06d}.{image_format}", False)
    finetune = scenes_of(seed, FINETUNE_STREAM, n_finetune, spec, lambda i: f"finetune/{i:06d}.{image_format}",
                         False)
    held_out = {t.name: scenes_of(seed, t.stream, sizes[t.name], t.spec(spec),
                                  lambda i, t=t: t.image_name(i, image_format), True) for t in TASKS}
    restyled = {} if held_style is None else {
        t.name: [restyle(s, held_style, scene_rng(seed, t.stream + STYLE_OFFSET, i), spec.noise_prob)
                 for i, s in enumerate(held_out[t.name])] for t in TASKS}
    bar = _progress_bar(progress, len(align) + len(finetune) + sum(sizes.values()) * (1 + bool(restyled)))
    with _pool(workers) as pool:
        write_images(out / "images", align + finetune, image_format, pool, bar)
        for task in TASKS:
            write_images(out / "eval" / task.name / task.image_dir, held_out[task.name], image_format, pool, bar)
            if restyled:
                write_images(out / _style_dir(held_style.name) / task.name / task.image_dir, restyled[task.name],
                             image_format, pool, bar)
    _write_training(manifest, align, finetune, tuple(turns))
    for task in TASKS:
        _write_task(manifest, task, held_out[task.name])
        if restyled:
            _write_task(manifest, task, restyled[task.name], held_style.name)
    if bar is not None:
        bar.close()
    manifest.save()
    return manifest


def _write_training(manifest: SynthManifest, align: list[Scene], finetune: list[Scene], turns) -> None:
    out, seed = manifest.root, manifest.seed
    records = [align_record(s, scene_rng(seed, ALIGN_STREAM + QUESTION_OFFSET, i), f"align-{i:06d}")
               for i, s in enumerate(align)]
    write_json(out / "align.json", records)
    wants = Alternator()
    conversations = [finetune_record(s, scene_rng(seed, FINETUNE_STREAM + QUESTION_OFFSET, i), f"finetune-{i:06d}",
                                     wants, turns) for i, s in enumerate(finetune)]
    write_json(out / "finetune.json", conversations)
    write_scenes(out / "scenes" / "align.json", align)
    write_scenes(out / "scenes" / "finetune.json", finetune)
    manifest.paths.update({"images": "images", "align": "align.json", "finetune": "finetune.json",
                           "scenes": {"align": "scenes/align.json", "finetune": "scenes/finetune.json"}})
    manifest.counts.update({"align": len(records), "finetune": len(conversations),
                            "finetune_turns": sum(len(c["conversations"]) // 2 for c in conversations)})


def _write_task(manifest: SynthManifest, task: EvalTask, scenes: list[Scene], style: str | None = None) -> None:
    """One evaluation set's files; with ``style``, the held-out style's copy under ``eval-<style>/``
    (recorded in the manifest under ``styles``, so ``SynthManifest.styled`` reads it as the set itself)."""
    top = "eval" if style is None else _style_dir(style)
    task_dir = manifest.root / top / task.name
    result = task.build(task_dir, scenes, manifest.seed, task.stream + QUESTION_OFFSET)
    write_scenes(task_dir / "scenes.json", scenes)
    rel = f"{top}/{task.name}"
    paths = {"dir": rel, "image_folder": f"{rel}/{task.image_dir}", "scenes": f"{rel}/scenes.json"}
    paths |= {role: f"{rel}/{name}" for role, name in result.pop("files").items()}
    path_root = manifest.paths if style is None else manifest.paths.setdefault("styles", {}).setdefault(style, {})
    count_root = manifest.counts if style is None else manifest.counts.setdefault("styles", {}).setdefault(style, {})
    path_root.setdefault("eval", {})[task.name] = paths
    count_root.setdefault("eval", {})[task.name] = {"images": len(scenes), **result}


def _progress_bar(enabled: bool, total: int):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="synth images", unit="img")


def _pool(workers: int):
    """A process pool when ``workers`` > 1 (results are consumed in order, so output is unchanged)."""
    return multiprocessing.get_context().Pool(workers) if workers > 1 else contextlib.nullcontext()
