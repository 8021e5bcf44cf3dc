"""The command-line entry point and the errors a user can cause."""

from __future__ import annotations

import json

import pytest

from qmamba.data.synth import SynthManifest, main, synthesize
from qmamba.errors import QMambaError


def test_main_writes_a_world(tmp_path, capsys):
    out = tmp_path / "w"
    args = ["--out", str(out), "--seed", "2", "--n-align", "5", "--n-finetune", "5", "--n-eval", "4",
            "--n-pope", "3", "--image-size", "96", "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "pope" in printed and "chance" in printed
    m = SynthManifest.load(out)
    assert m.seed == 2 and m.config["image_size"] == 96
    assert m.counts["align"] == 5 and m.counts["eval"]["pope"]["images"] == 3 and m.counts["eval"]["gqa"]["images"] == 4
    for task in m.eval_tasks:
        for role, rel in m.paths["eval"][task].items():
            assert (out / rel).exists(), (task, role, rel)
    scene = json.loads(m.path("eval", "gqa", "scenes").read_text())[0]
    assert scene["image_size"] == 96


def test_help_names_the_command(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0 and "qmamba data synth" in capsys.readouterr().out


def test_refuses_to_overwrite(tmp_path):
    synthesize(tmp_path, n_align=1, n_finetune=1, n_eval=1, eval_sizes={"pope": 1})
    with pytest.raises(QMambaError, match="overwrite"):
        synthesize(tmp_path, n_align=1, n_finetune=1, n_eval=1)
    m = synthesize(tmp_path, n_align=2, n_finetune=1, n_eval=1, overwrite=True)
    assert len(list((tmp_path / "images" / "align").iterdir())) == 2 and m.counts["align"] == 2


@pytest.mark.parametrize("kwargs, message", [
    ({"image_size": 48}, "image_size >= 57"),
    ({"grid": 1}, "grid"),
    ({"max_objects": 10}, "9 cells"),
    ({"n_eval": 0}, ">= 1 per eval set"),
    ({"image_format": "gif"}, "jpg"),
    ({"eval_sizes": {"coco": 3}}, "unknown evaluation sets"),
])
def test_bad_settings_raise(tmp_path, kwargs, message):
    with pytest.raises(QMambaError, match=message):
        synthesize(tmp_path, n_align=1, n_finetune=1, **kwargs)
    assert not (tmp_path / "manifest.json").exists()


def test_manifest_errors(tmp_path):
    with pytest.raises(QMambaError, match="qmamba data synth"):
        SynthManifest.load(tmp_path)


@pytest.mark.parametrize("fmt, b64_head", [("jpg", "/9j/"), ("png", "iVBOR")])
def test_image_formats(tmp_path, fmt, b64_head):
    m = synthesize(tmp_path, n_align=2, n_finetune=2, n_eval=2, image_format=fmt)
    names = [p.name for p in (tmp_path / "images" / "align").iterdir()]
    assert names and all(n.endswith("." + fmt) for n in names)
    with open(m.path("eval", "mmbench", "tsv")) as f:
        f.readline()
        assert f.readline().split("\t")[9].startswith(b64_head)
