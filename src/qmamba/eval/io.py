"""Reading and writing the file formats the benchmarks use: JSON, JSON lines, TSV and (via xlsx.py) XLSX.

Every reader raises ``EvalFileError`` naming the file and the line or field at fault.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

from qmamba.eval.errors import EvalFileError


def read_json_any(path: str | Path, record_keys: tuple[str, ...] = ()) -> Any:
    """A ``.jsonl`` file or JSON lines -> list of records; otherwise the one JSON document it holds.

    POPE's ``.json`` label files are JSON lines. A one-line file parses as a single object: when that object
    has any of ``record_keys`` it is returned as a one-record list.
    """
    path = Path(path)
    if not path.is_file():
        raise EvalFileError(f"{path}: no such file")
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        return []
    if path.suffix.lower() != ".jsonl":
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            pass
        else:
            return [data] if isinstance(data, dict) and any(k in data for k in record_keys) else data
    records = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise EvalFileError(
                f"{path}:{lineno}: neither one JSON document nor JSON lines ({e.msg} at column {e.colno}); "
                "expected a .json array/object or one JSON object per line"
            ) from None
    return records


def read_tsv(path: str | Path) -> list[dict[str, str]]:
    """A tab-separated table with a header row (quoting as pandas ``read_csv(sep='\\t')``) -> row dicts.

    Cells stay strings ('' for empty); MMBench's base64 image cells exceed csv's default field limit,
    so the limit is raised for the process.
    """
    path = Path(path)
    if not path.is_file():
        raise EvalFileError(f"{path}: no such file")
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh, delimiter="\t"))
    if not rows:
        raise EvalFileError(f"{path}: empty file; expected a header row then one row per question")
    header = rows[0]
    out = []
    for lineno, row in enumerate(rows[1:], 2):
        if len(row) != len(header):
            raise EvalFileError(f"{path}: row {lineno} has {len(row)} cells, the header has {len(header)}")
        out.append(dict(zip(header, row)))
    return out


def read_table(path: str | Path) -> list[dict[str, str]]:
    """A ``.tsv`` or ``.xlsx`` table -> row dicts of strings."""
    path = Path(path)
    if not path.is_file():
        raise EvalFileError(f"{path}: no such file")
    if path.suffix.lower() == ".xlsx":
        from qmamba.eval.xlsx import read_xlsx

        return read_xlsx(path)
    return read_tsv(path)


def write_tsv(path: str | Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    """Rows to a tab-separated file with ``columns`` as header (None -> empty cell)."""
    with Path(path).open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, delimiter="\t", lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if row.get(c) is None else row[c] for c in columns])


def write_json(path: str | Path, obj: Any) -> Path:
    """``obj`` as JSON (UTF-8, not ASCII-escaped)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return path


def write_jsonl(path: str | Path, records: list[dict[str, Any]]) -> Path:
    """One JSON object per line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return path


def require_fields(path: str | Path, records: list[Any], fields: tuple[str, ...], expected: str) -> None:
    """Every record is a dict holding every field, else an error naming file, record, field and format."""
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise EvalFileError(f"{path}: record {i} is a {type(rec).__name__}, not an object; expected {expected}")
        for field in fields:
            if field not in rec:
                raise EvalFileError(
                    f"{path}: record {i} has no {field!r} field (it has {sorted(rec)[:8]}); expected {expected}"
                )
