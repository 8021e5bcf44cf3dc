"""The dependency-free XLSX reader/writer, and the markdown report."""

from __future__ import annotations

import json
import zipfile

import pytest

from qmamba.eval import score_task, write_report
from qmamba.eval.errors import EvalFileError
from qmamba.eval.report import PAPER_TABLE1, save_metrics
from qmamba.eval.xlsx import column_letter, read_xlsx, write_xlsx


@pytest.mark.parametrize("i, letters", [(0, "A"), (25, "Z"), (26, "AA"), (701, "ZZ"), (702, "AAA")])
def test_column_letter(i, letters):
    assert column_letter(i) == letters


def test_round_trip_keeps_text_and_drops_illegal_xml(tmp_path):
    rows = [{"a": 1, "b": "x & <y>", "c": None}, {"a": 2.5, "b": "caf\u00e9\ttab\x01", "c": "  sp  "}]
    write_xlsx(tmp_path / "t.xlsx", ["a", "b", "c"], rows)
    assert read_xlsx(tmp_path / "t.xlsx") == [{"a": "1", "b": "x & <y>", "c": ""},
                                              {"a": "2.5", "b": "caf\u00e9\ttab", "c": "  sp  "}]


def test_reads_shared_strings_rich_text_and_booleans(tmp_path):
    ns = 'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'
    rel_ns = 'xmlns="http://schemas.openxmlformats.org/package/2006/relationships"'
    r_ns = 'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"'
    parts = {
        "xl/workbook.xml": f'<workbook {ns} {r_ns}><sheets><sheet name="S" sheetId="1" r:id="rId7"/>'
                           '</sheets></workbook>',
        "xl/_rels/workbook.xml.rels": f'<Relationships {rel_ns}><Relationship Id="rId7" Type="x" '
                                      'Target="/xl/worksheets/data.xml"/></Relationships>',
        "xl/sharedStrings.xml": f'<sst {ns}><si><t>index</t></si><si><t>prediction</t></si>'
                                '<si><r><t>Bo</t></r><r><t>ld</t></r></si></sst>',
        "xl/worksheets/data.xml": f'<worksheet {ns}><sheetData>'
                                  '<row r="1"><c r="A1" t="s"><v>0</v></c><c r="C1" t="s"><v>1</v></c></row>'
                                  '<row r="2"><c r="A2"><v>241</v></c><c r="C2" t="s"><v>2</v></c></row>'
                                  '<row r="3"><c r="A3" t="b"><v>1</v></c></row></sheetData></worksheet>',
    }
    with zipfile.ZipFile(tmp_path / "s.xlsx", "w") as zf:
        for name, xml in parts.items():
            zf.writestr(name, xml)
    assert read_xlsx(tmp_path / "s.xlsx") == [{"index": "241", "": "", "prediction": "Bold"},
                                              {"index": "True", "": "", "prediction": ""}]


def test_not_a_workbook(tmp_path):
    (tmp_path / "x.xlsx").write_text("hello")
    with pytest.raises(EvalFileError, match="not a readable .xlsx"):
        read_xlsx(tmp_path / "x.xlsx")


def _metrics(files, run_dir, model, pred_text):
    ann = files.json("gqa_q.json", {"1": {"answer": "yes", "isBalanced": True, "types": {"structural": "verify"}},
                                    "2": {"answer": "no", "isBalanced": True, "types": {"structural": "verify"}}})
    preds = files.json(f"{model}.json", [{"questionId": "1", "prediction": pred_text}])
    path = save_metrics(score_task("gqa", [ann], preds), run_dir, model)
    assert path == run_dir / "gqa" / "metrics.json" and json.loads(path.read_text())["model"] == model


def test_report_table(files, tmp_path):
    _metrics(files, tmp_path / "run_a", "qmamba-256", "yes")
    _metrics(files, tmp_path / "run_b", "qmamba-729", "no")
    lines = write_report([tmp_path / "run_a", tmp_path / "run_b"]).splitlines()
    assert lines[0] == "| model | VQAv2 | GQA | VizWiz | TextVQA | POPE | MMB |"
    assert lines[2] == "| qmamba-256 | – | 50.00 † | – | – | – | – |"  # one of two answered: incomplete
    assert lines[3] == "| qmamba-729 | – | 0.00 † | – | – | – | – |"
    assert "| *Q-Mamba, 729 queries (paper Table 1)* | 75.62 | 58.33 | 49.30 | 51.2 | 86.8 | 58.0 |" in lines
    assert len(PAPER_TABLE1) == 6 and PAPER_TABLE1["Cobra*"][3] == "44.9"
    with pytest.raises(EvalFileError, match="no <task>/metrics.json"):
        write_report([tmp_path / "empty"])
