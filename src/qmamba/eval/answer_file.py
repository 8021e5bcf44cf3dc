"""The answers file of a run: JSON lines appended batch by batch, so an interrupted run resumes.

    answers = AnswerFile(path, items)       # reads what an earlier run wrote; a torn last line is cut off
    todo = [it for it in items if not answers.has(it)]
    answers.append(records)                 # one write, flush and fsync per batch
    answers.finalize()                      # rewrite in item order (atomic), whatever order batches ran in

A line is complete once its newline is on disk (a line is written with its newline in one write), so a
process killed mid-write leaves at most one torn last line. Every id is written once: an id seen twice,
an id not among ``items`` or a prompt that differs from the item's (the questions changed) raises.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from qmamba.eval.errors import EvalFileError, PredictionMismatchError
from qmamba.eval.tasks.common import EvalItem


def item_key(question_id: Any, prompt: str | None = None) -> str:
    """A question as a dict key: its id (1 and "1" kept apart) and its prompt. The prompt is part of the
    key because LLaVA's TextVQA file gives every question of an image the image's id."""
    return json.dumps([question_id, prompt])


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``path`` through a temporary file and a rename: readers see the old file or the new one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_complete_lines(path: Path, repair: bool) -> tuple[list[str], int]:
    """(complete lines, bytes of a torn last line). With ``repair`` the torn bytes are cut from the file."""
    data = path.read_bytes()
    cut = data.rfind(b"\n") + 1
    torn = len(data) - cut
    if torn and repair:
        with path.open("r+b") as fh:
            fh.truncate(cut)
    try:
        text = data[:cut].decode("utf-8")
    except UnicodeDecodeError as e:
        raise EvalFileError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); is it an answers file?") from None
    return text.splitlines(), torn


class AnswerFile:
    """The answers already in ``path`` for ``items``, and appending new ones."""

    def __init__(self, path: str | Path, items: list[EvalItem], what: str = "the questions"):
        self.path, self.what = Path(path), what
        self.order = {item_key(it.question_id, it.prompt): i for i, it in enumerate(items)}
        self.prompts: dict[str, list[str]] = {}  # id -> the prompts asked under it
        for it in items:
            self.prompts.setdefault(json.dumps(it.question_id), []).append(it.prompt)
        self.records: dict[str, dict[str, Any]] = {}
        self.torn_bytes = 0
        if self.path.exists():
            lines, self.torn_bytes = read_complete_lines(self.path, repair=True)
            for lineno, line in enumerate(lines, 1):
                if line.strip():
                    self._accept(self._parse(line, lineno), f"{self.path}:{lineno}")

    def _parse(self, line: str, lineno: int) -> dict[str, Any]:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise EvalFileError(f"{self.path}:{lineno}: not a JSON answer line ({e.msg}); only a torn LAST line "
                                "is repaired: move the file away to start over") from None
        if not isinstance(rec, dict) or "question_id" not in rec or "text" not in rec:
            raise EvalFileError(f"{self.path}:{lineno}: expected an answer line {{\"question_id\", \"text\", ...}}")
        return rec

    def _key(self, rec: dict[str, Any], where: str) -> str:
        qid = rec["question_id"]
        prompts = self.prompts.get(json.dumps(qid))
        if prompts is None:
            raise PredictionMismatchError(
                f"{where}: question_id {qid!r} is not among the {len(self.order)} items of "
                f"{self.what}; the file belongs to another run: use another --out or remove it")
        if "prompt" not in rec:
            if len(prompts) > 1:
                raise EvalFileError(f"{where}: question_id {qid!r} has {len(prompts)} questions; the line needs "
                                    f"its 'prompt' to say which")
            return item_key(qid, prompts[0])
        if rec["prompt"] not in prompts:
            raise PredictionMismatchError(
                f"{where}: question_id {qid!r} was asked {rec['prompt']!r} but {self.what} now "
                f"give {prompts[0]!r}; the questions changed: use another --out")
        return item_key(qid, rec["prompt"])

    def _accept(self, rec: dict[str, Any], where: str) -> None:
        key = self._key(rec, where)
        if key in self.records:
            raise PredictionMismatchError(f"{where}: question_id {rec['question_id']!r} is answered twice")
        self.records[key] = rec

    def has(self, item: EvalItem) -> bool:
        return item_key(item.question_id, item.prompt) in self.records

    def __len__(self) -> int:
        return len(self.records)

    def append(self, records: list[dict[str, Any]]) -> None:
        """Add one batch's answers to the file (one write, then flush and fsync)."""
        for rec in records:
            self._accept(rec, f"{self.path} (new answer)")
        text = "".join(json.dumps(rec, ensure_ascii=False) + "\n" for rec in records)
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())

    def answers(self) -> list[dict[str, Any]]:
        """The answers in item order."""
        return [self.records[k] for k in sorted(self.records, key=self.order.__getitem__)]

    def finalize(self) -> None:
        """Rewrite the file in item order, so its content does not depend on batching or on resumes."""
        text = "".join(json.dumps(rec, ensure_ascii=False) + "\n" for rec in self.answers())
        atomic_write_text(self.path, text)
