"""Writing the generator's outputs: JSON, JSON lines and images (deterministic bytes)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from qmamba.data.synth.render import encode_image, render_scene
from qmamba.data.synth.scene import Scene


def write_json(path: Path, obj, indent: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=indent, ensure_ascii=False) + "\n", encoding="utf-8")


def write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def write_scenes(path: Path, scenes: Sequence[Scene]) -> None:
    """The ground-truth scene graphs of one split, as a JSON list."""
    write_json(path, [s.to_dict() for s in scenes])


def image_bytes(scene: Scene, fmt: str) -> bytes:
    return encode_image(render_scene(scene), fmt)


def _render_job(job: tuple[Scene, str]) -> bytes:
    return image_bytes(*job)


def write_images(folder: Path, scenes: Sequence[Scene], fmt: str, pool=None, progress=None) -> None:
    """Render every scene to ``folder / scene.image`` (in a worker pool when given; order-preserving)."""
    for parent in sorted({(folder / s.image).parent for s in scenes} | {folder}):
        parent.mkdir(parents=True, exist_ok=True)
    jobs = [(s, fmt) for s in scenes]
    results = pool.imap(_render_job, jobs, chunksize=32) if pool is not None else map(_render_job, jobs)
    for scene, data in zip(scenes, results):
        (folder / scene.image).write_bytes(data)
        if progress is not None:
            progress.update(1)
