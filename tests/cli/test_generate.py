"""`qmamba generate`'s input checks and options: a config of another family is named, an empty prompt is an
error, a prompt longer than the model was trained on is answered with a warning, and --short-answer asks as
LLaVA-1.5's short-answer benchmarks do."""

from __future__ import annotations

import json

import pytest
import yaml
from testing_utils import tiny_tokenizer

from qmamba.cli import main


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    """A language model with its tokenizer exported as `qmamba train` leaves it: RUN/0-align/model, beside
    RUN/config.yaml whose stage trained on 6 tokens."""
    from qmamba import MambaLM
    from qmamba.models.mamba_lm import MambaLMConfig

    run = tmp_path_factory.mktemp("run")
    (run / "config.yaml").write_text(yaml.safe_dump({"stages": [{"name": "align", "max_length": 6}]}))
    tok = tiny_tokenizer()
    model_dir = run / "0-align" / "model"
    MambaLM(MambaLMConfig(d_model=32, n_layer=2, vocab_size=len(tok), ssm_cfg={"d_state": 8})).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    return model_dir


def test_a_config_of_another_family_is_named(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llava_llama", "hidden_size": 4096}))
    (tmp_path / "scene.png").write_bytes(b"")
    assert main(["generate", "--model", str(tmp_path), "--image", str(tmp_path / "scene.png"), "--prompt", "hi"]) == 2
    err = capsys.readouterr().err
    assert "'llava_llama'" in err and "drop --image" not in err and err.count("\n") == 1


def test_an_lm_with_an_image_is_told_to_drop_it(lm_run, capsys):
    assert main(["generate", "--model", str(lm_run), "--image", "x.png", "--prompt", "hi"]) == 2
    assert "Mamba language model" in capsys.readouterr().err


@pytest.mark.parametrize("prompt", ["", "   "])
def test_an_empty_prompt_is_an_error(prompt, lm_run, capsys):
    assert main(["generate", "--model", str(lm_run), "--prompt", prompt]) == 2
    assert "--prompt is empty" in capsys.readouterr().err


def test_a_prompt_past_the_trained_length_is_answered_with_a_warning(lm_run, capsys, caplog):
    with caplog.at_level("WARNING", logger="qmamba"):
        assert main(["generate", "--model", str(lm_run), "--prompt", "what is", "--max-new-tokens", "1"]) == 0
    assert "longer than" not in caplog.text
    with caplog.at_level("WARNING", logger="qmamba"):
        assert main(["generate", "--model", str(lm_run), "--prompt", "what is what is what is what is",
                     "--max-new-tokens", "1"]) == 0
    assert "the prompt is 8 tokens" in caplog.text and "longer than the 6" in caplog.text
    assert "stages[0].max_length" in caplog.text
    capsys.readouterr()


def test_short_answer_appends_llavas_suffix(tmp_path, monkeypatch, capsys):
    from qmamba.commands import generate

    assert "single word or phrase" in generate.__doc__
    seen = []
    monkeypatch.setattr(generate, "_language_model", lambda args, path, tok: seen.append(args.prompt) or 0)
    from qmamba import MambaLM
    from qmamba.models.presets import LLM_PRESETS

    MambaLM(LLM_PRESETS["tiny-mamba"]()).save_pretrained(tmp_path)
    assert main(["generate", "--model", str(tmp_path), "--prompt", "What colour is it? ", "--short-answer"]) == 0
    assert seen == ["What colour is it?\nAnswer the question using a single word or phrase."]
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    assert "--short-answer" in capsys.readouterr().out
