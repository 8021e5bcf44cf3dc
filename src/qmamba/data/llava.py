"""LLaVA conversation files: JSON (a list of records) or JSONL (one record per line).

    {"id": "000000033471", "image": "coco/train2017/000000033471.jpg",       # image: optional
     "conversations": [{"from": "human", "value": "<image>\\nWhat is this?"},
                       {"from": "gpt", "value": "A bus."}, ...]}

    load_records(path) -> ([Record, ...], [BadRecord, ...])

A file that cannot be read at all (missing, not JSON, not a list) raises one ``InputError`` naming it.
A malformed record does not raise: it comes back as a ``BadRecord(source, id, reason)`` so the trainer
can count and report it. Rules, in order:

* roles: ``human``/``user`` -> ``user``, ``gpt``/``assistant`` -> ``assistant``; any other role is bad.
  Leading assistant turns are dropped (LLaVA does the same: a conversation starts with the user).
* at least one assistant turn after that, or the record is bad (nothing to learn from).
* ``image``: a non-empty string (or a list holding one); ``null`` or absent means text-only.
* the image placeholder ``<image>``: at most one per record, only in user turns, only with an image.
  It is normalised to the start of the first user turn, ``"<image>\\n" + text`` (LLaVA-1.5's training
  preprocessing does this for every record); a record with an image but no placeholder gets one there,
  as LLaVA's inference code and ``qmamba.data.processor`` do.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qmamba.data.chat import IMAGE_PLACEHOLDER
from qmamba.errors import InputError

ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}


@dataclass(frozen=True, slots=True)
class Record:
    """One valid conversation. ``turns``: (role, text), role 'user' | 'assistant'; ``index``: position in
    the file (0-based record number; for JSONL the line's record number, blank lines skipped)."""

    id: str
    image: str | None  # relative to the source's image root
    turns: list[tuple[str, str]]
    source: str
    index: int


@dataclass(frozen=True, slots=True)
class BadRecord:
    """A record that cannot be trained on: where it is and why."""

    source: str
    id: str  # the record's id, or "#<index>" when it has none
    reason: str

    def __str__(self) -> str:
        return f"{self.source} record {self.id}: {self.reason}"


def load_records(path: str | Path) -> tuple[list[Record], list[BadRecord]]:
    """Every record of a LLaVA JSON/JSONL file, split into valid ``Record``s and ``BadRecord``s."""
    source = str(path)
    good, bad = [], []
    for index, raw in enumerate(read_conversation_file(path)):
        parsed = raw if isinstance(raw, BadRecord) else parse_record(raw, source, index)
        (bad if isinstance(parsed, BadRecord) else good).append(parsed)
    return good, bad


def read_conversation_file(path: str | Path) -> list[Any]:
    """The raw records of a file. JSON (first character ``[``) or JSONL (anything else).

    A JSONL line that is not valid JSON becomes a ``BadRecord`` in the list; a JSON file that does
    not parse, or a file that is missing, raises ``InputError``.
    """
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"conversation file {path}: the file does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"conversation file {path}: cannot be read ({type(e).__name__}: {e})") from None
    if text.lstrip().startswith("["):
        return _read_json_list(text, path)
    return _read_jsonl(text, path)


def _read_json_list(text: str, path: Path) -> list[Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"conversation file {path}: invalid JSON at line {e.lineno}, column {e.colno} ({e.msg}); "
                         f"expected a JSON list of LLaVA records or JSONL with one record per line") from None
    return data


def _read_jsonl(text: str, path: Path) -> list[Any]:
    if _is_one_object(text):
        raise InputError(f"conversation file {path}: holds one JSON object spread over several lines; expected "
                         f"a JSON list of records ([{{...}}, ...]) or JSONL with one record per line")
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not lines:
        raise InputError(f"conversation file {path}: empty; expected a JSON list or JSONL records")
    records: list[Any] = []
    for n, line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            records.append(BadRecord(str(path), f"line {n}", f"invalid JSON ({e.msg} at column {e.colno})"))
    if all(isinstance(r, BadRecord) for r in records):
        raise InputError(f"conversation file {path}: no line is valid JSON (first: {records[0].reason}); "
                         f"expected a JSON list of LLaVA records or JSONL with one record per line")
    return records


def _is_one_object(text: str) -> bool:
    stripped = text.strip()
    if not stripped.startswith("{") or "\n" not in stripped:
        return False
    try:
        return isinstance(json.loads(stripped), dict)
    except json.JSONDecodeError:
        return False


def parse_record(raw: Any, source: str, index: int) -> Record | BadRecord:
    """Validate one raw record (see the module docstring for the rules)."""
    if not isinstance(raw, dict):
        return BadRecord(source, f"#{index}", f"not a JSON object (got {type(raw).__name__})")
    rid = str(raw["id"]) if raw.get("id") not in (None, "") else f"#{index}"

    def bad(reason: str) -> BadRecord:
        return BadRecord(source, rid, reason)

    image = raw.get("image")
    if isinstance(image, list) and len(image) == 1:
        image = image[0]
    if image is not None and (not isinstance(image, str) or not image.strip()):
        return bad(f"'image' is {image!r}; expected one relative path (a non-empty string) or no 'image'")
    turns = _parse_turns(raw.get("conversations"))
    if isinstance(turns, str):
        return bad(turns)
    turns = _place_image(turns, has_image=image is not None)
    if isinstance(turns, str):
        return bad(turns)
    return Record(rid, image, turns, source, index)


def _parse_turns(conversations: Any) -> list[tuple[str, str]] | str:
    """The (role, text) turns, leading assistant turns dropped; a str is the reason they are bad."""
    if not isinstance(conversations, list) or not conversations:
        return "no 'conversations' (expected a non-empty list of {'from', 'value'} turns)"
    turns = []
    for k, turn in enumerate(conversations):
        if not isinstance(turn, dict):
            return f"conversations[{k}] is {type(turn).__name__}; expected an object with 'from' and 'value'"
        role, value = turn.get("from"), turn.get("value")
        if role not in ROLES:
            return f"conversations[{k}].from is {role!r}; expected 'human' or 'gpt'"
        if not isinstance(value, str):
            return f"conversations[{k}].value is {type(value).__name__}; expected a string"
        turns.append((ROLES[role], value))
    while turns and turns[0][0] == "assistant":
        turns.pop(0)
    if not any(role == "assistant" for role, _ in turns):
        return "no assistant ('gpt') turn after a human turn: nothing to train on"
    return turns


def _place_image(turns: list[tuple[str, str]], has_image: bool) -> list[tuple[str, str]] | str:
    """Put the one placeholder at the start of the first user turn; a str is the reason the record is bad."""
    counts = [text.count(IMAGE_PLACEHOLDER) for _, text in turns]
    n = sum(counts)
    in_assistant = [k for k, (role, _) in enumerate(turns) if role == "assistant" and counts[k]]
    if in_assistant:
        return f"an {IMAGE_PLACEHOLDER} placeholder in assistant turn {in_assistant[0]}; only user turns hold it"
    if n and not has_image:
        return f"{n} {IMAGE_PLACEHOLDER} placeholder(s) but no 'image' field; add the image path or remove them"
    if n > 1:
        return f"{n} {IMAGE_PLACEHOLDER} placeholders; one image per record takes exactly one"
    if not has_image:
        return turns
    out = [(role, _strip_placeholder(text)) for role, text in turns]
    role, text = out[0]  # the first turn is a user turn (leading assistant turns were dropped)
    out[0] = (role, f"{IMAGE_PLACEHOLDER}\n{text}")
    return out


def _strip_placeholder(text: str) -> str:
    """``text`` without its placeholder; the whitespace around it becomes one space (none at the ends)."""
    if IMAGE_PLACEHOLDER not in text:
        return text
    return re.sub(r"\s*" + re.escape(IMAGE_PLACEHOLDER) + r"\s*", " ", text).strip()
