"""The qmamba CLI: fast help, every command's --help, info and generate end to end, one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from PIL import Image
from testing_utils import tiny_tokenizer

from qmamba.cli import COMMANDS, main
from qmamba.infer import generate
from qmamba.models.multimodal import MultimodalModel
from qmamba.models.presets import get_preset


def test_top_level_help_imports_no_torch():
    code = ("import sys\nfrom qmamba.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("False"), out
    assert all(name in out for name in COMMANDS)


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_has_help(name, capsys):
    with pytest.raises(SystemExit) as e:
        main([name, "--help"])
    assert e.value.code == 0
    assert f"qmamba {name}" in capsys.readouterr().out


def test_info_on_a_preset_counts_parameters(capsys):
    assert main(["info", "--preset", "tiny-qmamba-128", "--json"]) == 0
    import json

    info = json.loads(capsys.readouterr().out)
    model = MultimodalModel(get_preset("tiny-qmamba-128"))
    assert info["parameters"] == model.parameter_counts()
    assert info["visual_tokens"] == 4


def test_generate_end_to_end(tmp_path, capsys):
    model, tok = MultimodalModel(get_preset("tiny-qmamba-256")).eval(), tiny_tokenizer()
    model.save_pretrained(tmp_path / "m", tokenizer=tok)
    Image.new("RGB", (50, 40), (200, 10, 10)).save(tmp_path / "red.png")
    assert main(["generate", "--model", str(tmp_path / "m"), "--image", str(tmp_path / "red.png"),
                 "--prompt", "what is the colour ?", "--max-new-tokens", "4"]) == 0
    printed = capsys.readouterr().out.strip()
    from qmamba.pipeline import Pipeline

    expected = Pipeline.from_pretrained(tmp_path / "m").chat("what is the colour ?", image=tmp_path / "red.png",
                                                             max_new_tokens=4)
    assert printed == expected


def test_errors_are_one_line_with_exit_code_2(tmp_path, capsys):
    assert main(["info", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err and "Traceback" not in err
    (tmp_path / "lm").mkdir()
    from qmamba import MambaLM
    from qmamba.models.presets import LLM_PRESETS

    MambaLM(LLM_PRESETS["tiny-mamba"]()).save_pretrained(tmp_path / "lm")
    assert main(["generate", "--model", str(tmp_path / "lm"), "--prompt", "hi"]) == 2
    assert "no tokenizer" in capsys.readouterr().err


def test_generate_with_a_language_model(tmp_path, capsys):
    from qmamba import MambaLM
    from qmamba.models.mamba_lm import MambaLMConfig

    tok = tiny_tokenizer()
    lm = MambaLM(MambaLMConfig(d_model=32, n_layer=2, vocab_size=len(tok), ssm_cfg={"d_state": 8})).eval()
    lm.save_pretrained(tmp_path, dtype=torch.float32)
    tok.save_pretrained(tmp_path)
    assert main(["generate", "--model", str(tmp_path), "--prompt", "what is", "--max-new-tokens", "3"]) == 0
    ids = torch.tensor([tok.encode("what is")])
    new = generate(lm, ids, max_new_tokens=3, eos_token_id=tok.eos_token_id)[0, ids.shape[1]:]
    assert capsys.readouterr().out.strip() == ("what is" + tok.decode(new, skip_special_tokens=True)).strip()


def test_train_help_describes_the_data_format_and_every_config_field(capsys):
    import dataclasses

    from qmamba.train.config import ModelConfig, RunOptions, SourceConfig, StageConfig

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    assert '"conversations": [{"from": "human"' in text and "configs/" in text and "image_root" in text
    for section in (ModelConfig, StageConfig, RunOptions, SourceConfig):
        missing = [f.name for f in dataclasses.fields(section) if f.name not in text]
        assert not missing, f"{section.__name__} fields missing from qmamba train --help: {missing}"
