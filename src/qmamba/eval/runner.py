"""``run_eval``: ask a model every question of a benchmark, write the official results file, score it.

    from qmamba.eval.runner import run_eval
    run_eval("runs/q256/model", "gqa", "testdev_balanced_questions.json", "gqa/images",
             out_dir="runs/q256/eval", annotations=["testdev_balanced_questions.json"])

Everything of one task goes to ``<out_dir>/<task>/`` so one ``out_dir`` holds all six tasks and
``qmamba eval report out_dir`` tabulates them:

* ``predictions.jsonl``: LLaVA answer lines (``answer_record``), appended and flushed after every batch;
  a rerun skips the ids already answered and cuts a torn last line (``answer_file.py``); once the run is
  done the file is rewritten in question order, so its content does not depend on batching or resumes.
* the official results file (``TASKS[task].results_filename``), ``metrics.json`` and
  ``per_question.jsonl`` (with annotations), ``run_config.json`` (task, files, model, settings, counts, time).

Items are batched longest prompt first (less padding); decoding is greedy. Shards: see ``shards.py``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from qmamba.errors import InputError
from qmamba.eval.answer_file import AnswerFile, atomic_write_text
from qmamba.eval.errors import EvalFileError, EvalOptionError
from qmamba.eval.score import resolve_options
from qmamba.eval.shards import (
    PREDICTIONS,
    RUN_CONFIG,
    check_shard,
    merge_shards,
    rank_device,
    shard_config,
    shard_from_env,
    shard_predictions,
    shards_complete,
)
from qmamba.eval.tasks import TASKS, TaskSpec
from qmamba.eval.tasks.common import EvalItem, answer_record

PER_QUESTION = "per_question.jsonl"
PathLike = str | Path


def get_task(task: str) -> TaskSpec:
    if task not in TASKS:
        raise EvalOptionError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    return TASKS[task]


def as_paths(paths: PathLike | list[PathLike] | tuple[PathLike, ...] | None) -> list[Path]:
    if paths is None:
        return []
    return [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]


def load_task_items(task: str, questions: list[Path], load_options: dict[str, Any] | None = None) -> list[EvalItem]:
    """``TASKS[task].load_items``; POPE takes several label files, the others exactly one questions file."""
    if not questions:
        raise InputError(f"{task}: give a questions file")
    if task != "pope" and len(questions) > 1:
        raise InputError(f"{task}: give one questions file, got {len(questions)}; only POPE takes one per split")
    items = get_task(task).load_items(questions if task == "pope" else questions[0], **(load_options or {}))
    if not items:
        raise EvalFileError(f"{questions[0]}: no questions in the file")
    return items


def image_source(task: str, items: list[EvalItem], images: PathLike | None) -> Callable[[EvalItem], Any]:
    """item -> what the processor takes (a path, a PIL image or None); every named image must exist."""
    if task == "mmbench":
        from qmamba.eval.tasks.mmbench import load_image

        return lambda it: load_image(it) if it.meta.get("image_base64") else None
    named = [it.image for it in items if it.image is not None]
    if named and images is None:
        raise InputError(f"the questions name image files (e.g. {named[0]!r}); pass the folder holding them "
                         "(--images DIR)")
    if images is None:
        return lambda it: None
    folder = Path(images)
    if not folder.is_dir():
        raise InputError(f"--images {folder}: no such folder")
    missing = [name for name in named if not (folder / name).is_file()]
    if missing:
        raise InputError(f"{len(missing)} of {len(named)} images are not in {folder}, e.g. {missing[:3]}; "
                         "is --images the folder of this split?")
    return lambda it: folder / it.image if it.image is not None else None


def by_prompt_length(items: list[EvalItem]) -> list[EvalItem]:
    """Longest prompt first (stable, so the order is a function of the items alone)."""
    return sorted(items, key=lambda it: -len(it.prompt))


def load_pipeline(model: Any, device: str | None, dtype: str | None):
    """A ``Pipeline`` as given, or loaded from a model directory."""
    from qmamba.pipeline import Pipeline

    if isinstance(model, Pipeline):
        return model
    return Pipeline.from_pretrained(model, device=rank_device(device), dtype=dtype)


def generate_answers(pipe, todo: list[EvalItem], image_of: Callable[[EvalItem], Any], answers: AnswerFile,
                     batch_size: int, max_new_tokens: int, model_id: str, progress) -> int:
    """Greedy answers for ``todo`` in batches, each batch appended to ``answers`` at once; the next batch's images
    are read and preprocessed in the background meanwhile (``data.prefetch``). Returns the count."""
    from concurrent.futures import ThreadPoolExecutor

    from qmamba.data.prefetch import prefetched, prepare_images

    def prepare(batch):
        images = [image_of(it) for it in batch]
        return images, prepare_images(pipe.processor, images, pool)

    batches = [todo[start:start + batch_size] for start in range(0, len(todo), batch_size)]
    with ThreadPoolExecutor(min(8, os.cpu_count() or 1), thread_name_prefix="qmamba-images") as pool:
        for batch, (images, pixels) in prefetched(batches, prepare):
            texts = pipe.batch([it.prompt for it in batch], images, pixel_values=pixels,
                               max_new_tokens=max_new_tokens, do_sample=False)
            answers.append([answer_record(it, text, model_id) for it, text in zip(batch, texts)])
            progress.update(len(batch))
    return len(todo)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_config(path: Path, config: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(config, indent=1, ensure_ascii=False) + "\n")


def read_config(task_dir: Path) -> dict[str, Any]:
    path = task_dir / RUN_CONFIG
    if not path.is_file():
        raise EvalFileError(f"{task_dir}: no {RUN_CONFIG}; is this the <out>/<task> folder of an eval run?")
    return json.loads(path.read_text(encoding="utf-8"))


def _check_settings(s: dict[str, Any]) -> None:
    for key in ("batch_size", "limit", "max_new_tokens"):
        value = s[key]
        if value is not None and (not isinstance(value, int) or value < 1):
            raise InputError(f"{key.replace('_', '-')} must be a positive integer, got {value!r}")


def _check_resume(path: Path, config: dict[str, Any], n_answers: int) -> None:
    """Answers already in the folder must come from the same model and generation length."""
    if n_answers == 0 or not path.is_file():
        return
    old = json.loads(path.read_text(encoding="utf-8"))
    pairs = (("model id", old["model"]["model_id"], config["model"]["model_id"]),
             ("max-new-tokens", old["settings"]["max_new_tokens"], config["settings"]["max_new_tokens"]))
    for what, before, now in pairs:
        if before != now:
            raise InputError(f"{path.parent}: {n_answers} answers were made with {what} {before!r}, this run asks "
                             f"{now!r}; resume with the same settings or use another --out")


def _plan(task: str, questions: list[Path], images, annotations: list[Path], model, model_id, settings,
          n_items: int, n_selected: int) -> dict[str, Any]:
    """The run_config.json of a run about to start."""
    shard = settings["shard"]
    return {
        "task": task, "complete": False,
        "files": {"questions": [str(p.resolve()) for p in questions],
                  "images": str(Path(images).resolve()) if images is not None else None,
                  "annotations": [str(p.resolve()) for p in annotations],
                  "predictions": shard_predictions(*shard) if shard else PREDICTIONS,
                  "results": None, "metrics": None, "per_question": None},
        "model": {"path": str(Path(model).resolve()) if isinstance(model, (str, Path)) else None,
                  "model_id": model_id},
        "settings": {**settings, "decoding": "greedy"},
        "counts": {"n_items": n_items, "n_selected": n_selected, "n_answered_before": 0, "n_generated": 0,
                   "n_answered": 0},
        "time": {"started": _now(), "finished": None, "seconds": None},
    }


def run_eval(model: Any, task: str, questions: PathLike | list[PathLike], images: PathLike | None = None, *,
             out_dir: PathLike, annotations: PathLike | list[PathLike] | None = None, batch_size: int = 8,
             limit: int | None = None, shard: tuple[int, int] | None = None, max_new_tokens: int | None = None,
             device: str | None = None, dtype: str | None = None, model_id: str | None = None,
             show_progress: bool = True, load_options: dict[str, Any] | None = None,
             score_options: dict[str, Any] | None = None) -> Path:
    """Answer ``task``'s questions with ``model`` (a directory or a ``Pipeline``); returns ``<out_dir>/<task>``.

    ``limit``: the first N questions only (scored with missing='skip', noted in metrics.json).
    ``shard``: ``(i, n)`` answers items ``i::n`` into ``predictions.shard-{i}-of-{n}.jsonl`` (default under
    torchrun: ``(RANK, WORLD_SIZE)``); the last shard to finish merges. ``load_options`` go to
    ``load_items`` (TextVQA: ``ocr_file``, ``use_ocr``), ``score_options`` to ``score_task``.
    """
    spec, qpaths, apaths = get_task(task), as_paths(questions), as_paths(annotations)
    if isinstance(model, (str, Path)):
        from qmamba.models.checkpoints import require_dir

        require_dir(model, "--model")  # before anything is written
    shard = check_shard(shard) if shard is not None else shard_from_env()
    settings = {"batch_size": batch_size, "limit": limit, "shard": list(shard) if shard else None,
                "max_new_tokens": spec.max_new_tokens if max_new_tokens is None else max_new_tokens,
                "device": device, "dtype": dtype, "load_options": load_options, "score_options": score_options}
    _check_settings(settings)
    resolve_options(task, score_options or {})  # a bad option fails now, not after generation
    for path in apaths:
        if not path.is_file():
            raise EvalFileError(f"{path}: no such annotations file")
    items = load_task_items(task, qpaths, load_options)
    selected = items[:limit] if limit else items
    mine = selected[shard[0]::shard[1]] if shard else selected
    image_of = image_source(task, mine, images)
    model_id = model_id or (Path(model).name if isinstance(model, (str, Path)) else "qmamba")
    task_dir = Path(out_dir) / task
    task_dir.mkdir(parents=True, exist_ok=True)
    config = _plan(task, qpaths, images, apaths, model, model_id, settings, len(items), len(mine))
    # a shard file holds its shard's items only; the main file may keep answers past --limit from earlier runs
    universe = mine if shard else items
    answers = AnswerFile(task_dir / config["files"]["predictions"], universe, what=f"{task} questions {qpaths[0]}")
    config_path = task_dir / (shard_config(*shard) if shard else RUN_CONFIG)
    _check_resume(config_path, config, len(answers))
    config["counts"]["n_answered_before"] = len(answers)
    write_config(config_path, config)
    _answer_all(model, mine, image_of, answers, config, show_progress)
    write_config(config_path, config)
    if shard is None:
        finish_run(task_dir)
    elif shards_complete(task_dir, shard[1]):
        merge_shards(task_dir)
        finish_run(task_dir)
    return task_dir


def _answer_all(model, mine: list[EvalItem], image_of, answers: AnswerFile, config: dict[str, Any],
                show_progress: bool) -> None:
    """Generate what is missing, then put the file in item order and fill in counts and time."""
    from tqdm import tqdm

    s = config["settings"]
    todo = [it for it in by_prompt_length(mine) if not answers.has(it)]
    n_done = len(mine) - len(todo)
    start = time.perf_counter()
    n_new, generating = 0, 0.0
    if todo:
        pipe = load_pipeline(model, s["device"], s["dtype"])
        s["device"], s["dtype"] = str(pipe.device), str(next(pipe.model.parameters()).dtype).replace("torch.", "")
        desc = config["task"] + (f" shard {s['shard'][0]}/{s['shard'][1]}" if s["shard"] else "")
        with tqdm(total=len(mine), initial=n_done, unit="ans", desc=desc, disable=not show_progress,
                  dynamic_ncols=True) as progress:
            t0 = time.perf_counter()
            n_new = generate_answers(pipe, todo, image_of, answers, s["batch_size"], s["max_new_tokens"],
                                     config["model"]["model_id"], progress)
            generating = time.perf_counter() - t0
    answers.finalize()
    config["counts"].update(n_generated=n_new, n_answered=len(answers))
    config["complete"] = all(answers.has(it) for it in mine)
    config["time"].update(finished=_now(), seconds=round(time.perf_counter() - start, 3),
                          generation_seconds=round(generating, 3),
                          answers_per_second=round(n_new / generating, 3) if n_new and generating > 0 else None)


def score_run(task_dir: Path, config: dict[str, Any], n_answered: int) -> dict[str, Any]:
    """score_task on the run's predictions. A --limit run that left questions unasked scores the answered
    ones (missing='skip' unless score_options say otherwise) and says so in ``result["limit"]``."""
    from qmamba.eval.score import score_task

    files, n_items, limit = config["files"], config["counts"]["n_items"], config["settings"]["limit"]
    questions = files["questions"][0] if len(files["questions"]) == 1 else None
    options = dict(config["settings"].get("score_options") or {})
    partial = bool(limit) and n_answered < n_items
    if partial:
        options.setdefault("missing", "skip")
    result = score_task(config["task"], files["annotations"], task_dir / PREDICTIONS, questions,
                        task_dir / PER_QUESTION, **options)
    if partial:
        result["limit"] = {
            "limit": limit, "n_answered": n_answered, "n_items": n_items,
            "note": f"--limit {limit}: {n_answered} of the {n_items} questions were asked and scored "
                    f"(missing={options['missing']!r}); not a full-benchmark score"}
    return result


def finish_run(task_dir: PathLike) -> dict[str, Any]:
    """After generation (or a merge): the official results file, then metrics if annotations were given.

    Reads and updates ``<task_dir>/run_config.json``; returns it.
    """
    from qmamba.eval.report import save_metrics

    task_dir = Path(task_dir)
    config = read_config(task_dir)
    spec = get_task(config["task"])
    items = load_task_items(config["task"], as_paths(config["files"]["questions"]),
                            config["settings"].get("load_options"))
    answers = AnswerFile(task_dir / PREDICTIONS, items, what=f"{config['task']} questions").answers()
    spec.write_results(answers, items, task_dir / spec.results_filename)
    config["files"]["results"] = spec.results_filename
    if config["files"]["annotations"] and answers:
        result = score_run(task_dir, config, len(answers))
        save_metrics(result, task_dir.parent, config["model"]["model_id"])
        config["files"].update(metrics="metrics.json", per_question=PER_QUESTION)
        config["main"] = {"metric": result["main_metric"], "value": result["main"]}
    write_config(task_dir / RUN_CONFIG, config)
    return config
