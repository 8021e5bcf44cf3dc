"""A minimal XLSX reader and writer (zipfile + ElementTree), enough for MMBench tables.

The writer makes one sheet of inline strings and numbers (what the MMBench server reads with pandas);
the reader takes the first sheet of any workbook (shared or inline strings, numbers, booleans) and
returns row dicts of strings, so qmamba needs neither pandas nor openpyxl.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any
from xml.etree import ElementTree as ET
from xml.sax.saxutils import escape

from qmamba.eval.errors import EvalFileError

_NS = {
    "m": "http://schemas.openxmlformats.org/spreadsheetml/2006/main",
    "r": "http://schemas.openxmlformats.org/officeDocument/2006/relationships",
    "pr": "http://schemas.openxmlformats.org/package/2006/relationships",
}
_ILLEGAL_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")  # not allowed in XML 1.0; dropped on write

_CONTENT_TYPES = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
    '<Default Extension="xml" ContentType="application/xml"/>'
    '<Override PartName="/xl/workbook.xml" '
    'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
    '<Override PartName="/xl/worksheets/sheet1.xml" '
    'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
    "</Types>"
)
_ROOT_RELS = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    f'<Relationships xmlns="{_NS["pr"]}"><Relationship Id="rId1" '
    'Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" '
    'Target="xl/workbook.xml"/></Relationships>'
)
_WORKBOOK = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    f'<workbook xmlns="{_NS["m"]}" xmlns:r="{_NS["r"]}">'
    '<sheets><sheet name="Sheet1" sheetId="1" r:id="rId1"/></sheets></workbook>'
)
_WORKBOOK_RELS = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    f'<Relationships xmlns="{_NS["pr"]}"><Relationship Id="rId1" '
    'Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" '
    'Target="worksheets/sheet1.xml"/></Relationships>'
)


def column_letter(i: int) -> str:
    """0 -> 'A', 25 -> 'Z', 26 -> 'AA'."""
    letters = ""
    i += 1
    while i:
        i, rem = divmod(i - 1, 26)
        letters = chr(65 + rem) + letters
    return letters


def _column_index(ref: str) -> int:
    """'B7' -> 1 (zero-based column of a cell reference)."""
    n = 0
    for ch in ref:
        if not ch.isalpha():
            break
        n = n * 26 + ord(ch.upper()) - 64
    return n - 1


def _cell_xml(ref: str, value: Any) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f'<c r="{ref}"><v>{value!r}</v></c>'
    text = escape(_ILLEGAL_XML.sub("", str(value)))
    return f'<c r="{ref}" t="inlineStr"><is><t xml:space="preserve">{text}</t></is></c>'


def write_xlsx(path: str | Path, columns: list[str], rows: list[dict[str, Any]]) -> Path:
    """One sheet: a header row of ``columns`` then ``rows`` (ints/floats as numbers, None/'' as empty)."""
    lines = []
    for r, values in enumerate([dict(zip(columns, columns))] + rows, 1):
        cells = "".join(_cell_xml(f"{column_letter(c)}{r}", values.get(col)) for c, col in enumerate(columns))
        lines.append(f'<row r="{r}">{cells}</row>')
    sheet = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        f'<worksheet xmlns="{_NS["m"]}"><sheetData>{"".join(lines)}</sheetData></worksheet>'
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("[Content_Types].xml", _CONTENT_TYPES)
        zf.writestr("_rels/.rels", _ROOT_RELS)
        zf.writestr("xl/workbook.xml", _WORKBOOK)
        zf.writestr("xl/_rels/workbook.xml.rels", _WORKBOOK_RELS)
        zf.writestr("xl/worksheets/sheet1.xml", sheet)
    return path


def _first_sheet_path(zf: zipfile.ZipFile) -> str:
    """The part name of the workbook's first sheet, through workbook.xml and its relationships."""
    workbook = ET.fromstring(zf.read("xl/workbook.xml"))
    sheet = workbook.find("m:sheets/m:sheet", _NS)
    rid = sheet.get(f"{{{_NS['r']}}}id")
    rels = ET.fromstring(zf.read("xl/_rels/workbook.xml.rels"))
    target = next(rel.get("Target") for rel in rels if rel.get("Id") == rid)
    return target.lstrip("/") if target.startswith("/") else str(PurePosixPath("xl") / target)


def _shared_strings(zf: zipfile.ZipFile) -> list[str]:
    if "xl/sharedStrings.xml" not in zf.namelist():
        return []
    root = ET.fromstring(zf.read("xl/sharedStrings.xml"))
    out = []
    for si in root.findall("m:si", _NS):  # plain <t> or rich-text runs <r><t>; phonetic <rPh> skipped
        parts = si.findall("m:t", _NS) + si.findall("m:r/m:t", _NS)
        out.append("".join(t.text or "" for t in parts))
    return out


def _cell_text(cell: ET.Element, shared: list[str]) -> str:
    kind = cell.get("t", "n")
    if kind == "inlineStr":
        return "".join(t.text or "" for t in cell.iter(f"{{{_NS['m']}}}t"))
    v = cell.find("m:v", _NS)
    text = "" if v is None or v.text is None else v.text
    if kind == "s":
        return shared[int(text)]
    if kind == "b":
        return "True" if text == "1" else "False"
    return text


def read_xlsx(path: str | Path) -> list[dict[str, str]]:
    """First sheet of an .xlsx -> row dicts keyed by the header row; every cell a string ('' when empty)."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            shared = _shared_strings(zf)
            sheet = ET.fromstring(zf.read(_first_sheet_path(zf)))
    except (zipfile.BadZipFile, KeyError, StopIteration, AttributeError, ET.ParseError) as e:
        raise EvalFileError(f"{path}: not a readable .xlsx workbook ({type(e).__name__}: {e})") from None
    grid = []
    for row in sheet.iter(f"{{{_NS['m']}}}row"):
        values: dict[int, str] = {}
        for pos, cell in enumerate(row.findall("m:c", _NS)):
            ref = cell.get("r")
            values[_column_index(ref) if ref else pos] = _cell_text(cell, shared)
        grid.append(values)
    if not grid:
        raise EvalFileError(f"{path}: the first sheet is empty; expected a header row")
    header = [grid[0].get(i, "") for i in range(max(grid[0]) + 1)]
    return [{name: values.get(i, "") for i, name in enumerate(header)} for values in grid[1:]]
