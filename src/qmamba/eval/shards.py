"""Splitting a run over processes or GPUs, and merging the pieces back.

Shard ``(i, n)`` takes items ``i::n`` (after ``--limit``) and writes, in the task's run folder,
``predictions.shard-{i}-of-{n}.jsonl`` (in item order once it is done) and
``run_config.shard-{i}-of-{n}.json`` (``"complete": true`` once every item of the shard is answered).
Under ``torchrun`` (WORLD_SIZE > 1) the shard is ``(RANK, WORLD_SIZE)`` and the GPU ``cuda:LOCAL_RANK``.

``merge_shards`` interleaves the complete shard files back into ``predictions.jsonl`` in item order
(item k is line k // n of shard k % n) and writes ``run_config.json``; a missing or incomplete shard
raises, naming it; ``runner.finish_run`` then writes the results file and the metrics. The runner does
both on its own when the last shard finishes (``qmamba eval merge`` does both by hand).
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from qmamba.errors import InputError
from qmamba.eval.answer_file import atomic_write_text, item_key, read_complete_lines
from qmamba.eval.errors import EvalFileError, PredictionMismatchError

PREDICTIONS = "predictions.jsonl"
RUN_CONFIG = "run_config.json"
_SHARD_FILE = re.compile(r"^predictions\.shard-(\d+)-of-(\d+)\.jsonl$")


def shard_predictions(i: int, n: int) -> str:
    return f"predictions.shard-{i}-of-{n}.jsonl"


def shard_config(i: int, n: int) -> str:
    return f"run_config.shard-{i}-of-{n}.json"


def check_shard(shard: tuple[int, int]) -> tuple[int, int]:
    """``(i, n)`` with 0 <= i < n, else an InputError."""
    try:
        i, n = (int(v) for v in shard)
    except (TypeError, ValueError):
        raise InputError(f"shard {shard!r}: expected (index, count), e.g. (0, 4)") from None
    if n < 1 or not 0 <= i < n:
        raise InputError(f"shard {i}/{n}: the index must be in 0..{n - 1} (shards are numbered from 0)")
    return i, n


def parse_shard(text: str) -> tuple[int, int]:
    """``"1/4"`` -> (1, 4)."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not m:
        raise InputError(f"--shard {text!r}: expected I/N, e.g. 0/4 for the first of four shards")
    return check_shard((int(m.group(1)), int(m.group(2))))


def shard_from_env(env: Mapping[str, str] = os.environ) -> tuple[int, int] | None:
    """``(RANK, WORLD_SIZE)`` under torchrun with more than one process, else None."""
    world = int(env.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return None
    return check_shard((int(env.get("RANK", "0")), world))


def rank_device(device: str | None, env: Mapping[str, str] = os.environ) -> str | None:
    """Under torchrun with CUDA, each process takes ``cuda:LOCAL_RANK`` unless a specific device is asked."""
    if shard_from_env(env) is None or device not in (None, "auto", "cuda"):
        return device
    import torch

    if not torch.cuda.is_available():
        return device
    return f"cuda:{int(env.get('LOCAL_RANK', '0'))}"


def find_shards(task_dir: Path) -> int | None:
    """The shard count of the shard files in ``task_dir`` (None if none); mixed counts raise."""
    counts = {int(m.group(2)) for p in task_dir.glob("predictions.shard-*.jsonl") if (m := _SHARD_FILE.match(p.name))}
    if len(counts) > 1:
        raise EvalFileError(f"{task_dir}: shard files of {sorted(counts)} shards; remove the stale ones")
    return counts.pop() if counts else None


def _read_config(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None


def shards_complete(task_dir: Path, n: int) -> bool:
    """Whether every shard of ``n`` says it is complete."""
    return all((_read_config(task_dir / shard_config(i, n)) or {}).get("complete") for i in range(n))


def _shard_answers(task_dir: Path, i: int, n: int) -> tuple[list[str], dict[str, Any]]:
    """(answer lines, config) of one complete shard; a missing or incomplete shard raises, naming it."""
    path, config = task_dir / shard_predictions(i, n), _read_config(task_dir / shard_config(i, n))
    if not path.is_file() or config is None:
        raise EvalFileError(f"{path}: shard {i} of {n} is missing; run it (qmamba eval run ... --shard {i}/{n})")
    lines, torn = read_complete_lines(path, repair=False)
    lines = [line for line in lines if line.strip()]
    need = config["counts"]["n_selected"]
    if not config.get("complete") or torn or len(lines) != need:
        raise EvalFileError(f"{path}: shard {i} of {n} is incomplete ({len(lines)} of {need} answers); rerun it "
                            f"with the same command (--shard {i}/{n}) to finish it")
    return lines, config


def _run_identity(config: dict[str, Any]) -> tuple:
    """What every shard of one run shares."""
    return config["task"], config["files"]["questions"], config["settings"]["limit"], config["counts"]["n_items"]


def _check_same_run(task_dir: Path, configs: list[dict[str, Any]], sizes: list[int]) -> None:
    """The shards split one run: same task, questions and limit, and sizes that fit items ``i::n``."""
    n, total = len(configs), sum(sizes)
    for i, c in enumerate(configs[1:], 1):
        if _run_identity(c) != _run_identity(configs[0]):
            raise EvalFileError(f"{task_dir / shard_config(i, n)}: task, questions or --limit differ from shard "
                                "0's; were the shards run with different arguments?")
    for i, size in enumerate(sizes):
        if size != len(range(i, total, n)):
            raise EvalFileError(f"{task_dir / shard_predictions(i, n)}: {size} answers, but shard {i} of {n} of "
                                f"{total} items holds {len(range(i, total, n))}; were the shards run on "
                                "different questions?")


def _merged_config(configs: list[dict[str, Any]]) -> dict[str, Any]:
    """Shard 0's config with the counts summed, the time spanning all shards and the shard list."""
    merged = {**configs[0], "complete": True, "shards": [c["settings"]["shard"] for c in configs]}
    merged["settings"] = {**configs[0]["settings"], "shard": None}
    merged["files"] = {**configs[0]["files"], "predictions": PREDICTIONS}
    keys = ("n_selected", "n_answered_before", "n_generated", "n_answered")
    merged["counts"] = {**configs[0]["counts"], **{k: sum(c["counts"][k] for c in configs) for k in keys}}
    seconds, generating = (sum(c["time"][k] or 0.0 for c in configs) for k in ("seconds", "generation_seconds"))
    n_new = merged["counts"]["n_generated"]
    merged["time"] = {"started": min(c["time"]["started"] for c in configs),
                      "finished": max(c["time"]["finished"] for c in configs),
                      "seconds": round(seconds, 3), "generation_seconds": round(generating, 3),
                      "seconds_summed_over_shards": True,
                      "answers_per_second": round(n_new / generating, 3) if n_new and generating > 0 else None}
    return merged


def shard_dir(out_dir: str | Path, task: str | None = None) -> Path:
    """The folder holding shard files: ``out_dir/task``, else ``out_dir`` itself, else its one task folder."""
    root = Path(out_dir)
    if task:
        return root / task
    if find_shards(root) is not None:
        return root
    found = [d for d in sorted(root.iterdir()) if d.is_dir() and find_shards(d)] if root.is_dir() else []
    if not found:
        raise EvalFileError(f"{root}: no predictions.shard-I-of-N.jsonl files here or in its task folders")
    if len(found) > 1:
        raise EvalFileError(f"{root}: shard files of several tasks ({', '.join(d.name for d in found)}); name one "
                            "(--task)")
    return found[0]


def merge_shards(out_dir: str | Path, task: str | None = None) -> Path:
    """Complete shard files -> ``predictions.jsonl`` in item order (+ ``run_config.json``); returns its path.

    ``out_dir``: the run's --out folder (with ``task``, or holding one task's shards) or the task folder.
    """
    task_dir = shard_dir(out_dir, task)
    n = find_shards(task_dir)
    if n is None:
        raise EvalFileError(f"{task_dir}: no predictions.shard-I-of-N.jsonl files to merge")
    shards = [_shard_answers(task_dir, i, n) for i in range(n)]
    total = sum(len(lines) for lines, _ in shards)
    _check_same_run(task_dir, [c for _, c in shards], [len(lines) for lines, _ in shards])
    merged = [shards[k % n][0][k // n] for k in range(total)]
    keys = (item_key(rec["question_id"], rec.get("prompt")) for rec in map(json.loads, merged))
    repeated = [k for k, c in Counter(keys).items() if c > 1]
    if repeated:
        raise PredictionMismatchError(f"{task_dir}: question_id {repeated[0]} is in more than one shard; were the "
                                      "shards run on different questions files?")
    out = task_dir / PREDICTIONS
    atomic_write_text(out, "".join(line + "\n" for line in merged))
    config = _merged_config([c for _, c in shards])
    atomic_write_text(task_dir / RUN_CONFIG, json.dumps(config, indent=1, ensure_ascii=False) + "\n")
    return out
