"""``qmamba viz attention`` on tiny saved models: a PNG with one panel per block x group (x mask) beside the
image, and one clear line for a model without query attention."""

from __future__ import annotations

import pytest
from PIL import Image

from qmamba.cli import main
from qmamba.models.multimodal import MultimodalModel
from qmamba.models.presets import get_preset
from qmamba.utils.config import write_json
from qmamba.viz.heatmap import PANEL, figure_size

TITLE_LINES = 3


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "scene.png"
    im = Image.new("RGB", (50, 40), (230, 230, 230))
    im.paste((200, 10, 10), (5, 5, 20, 20))
    im.save(path)
    return path


def _saved(preset: str, path):
    MultimodalModel(get_preset(preset)).save_pretrained(path)
    return path


@pytest.mark.parametrize("preset,args,rows,cols", [
    ("tiny-qmamba-128", ["--mask", "both"], 2, 1 + 4 * 2),  # 2 blocks; image + 4 queries x 2 masks
    ("tiny-qmamba-256", ["--blocks", "-1", "--groups", "3", "--panel-size", "64"], 1, 1 + 3),
    ("tiny-qformer-256", ["--blocks", "0,-1", "--mask", "global"], 2, 1 + 8),
])
def test_viz_attention_writes_one_panel_per_block_and_group(tmp_path, image, capsys, preset, args, rows, cols):
    out = tmp_path / "maps" / "attention.png"
    model = _saved(preset, tmp_path / "m")
    assert main(["viz", "attention", "--model", str(model), "--image", str(image), "--out", str(out), *args]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    panel = int(args[args.index("--panel-size") + 1]) if "--panel-size" in args else PANEL
    with Image.open(out) as png:
        assert png.format == "PNG"
        assert png.size == figure_size(rows, cols, TITLE_LINES, panel)


@pytest.mark.parametrize("preset,connector", [("tiny-cobra", "mlp"), ("tiny-vlmamba-bsm", "vlmamba")])
def test_viz_attention_refuses_a_model_without_query_attention(tmp_path, image, capsys, preset, connector):
    model = tmp_path / "m"
    model.mkdir()
    write_json(model / "config.json", get_preset(preset).to_dict())  # the config alone decides: no weights read
    assert main(["viz", "attention", "--model", str(model), "--image", str(image), "--out",
                 str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert f"the {connector} connector has no query cross-attention" in err
    assert "qmamba-128" in err and "qformer-256" in err
    assert not (tmp_path / "x.png").exists()
