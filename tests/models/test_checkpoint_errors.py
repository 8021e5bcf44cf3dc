"""Bad checkpoints get one clear error that names the problem, never a deep stack trace."""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch

from qmamba import MambaLM
from qmamba.errors import CheckpointError, ConfigError
from qmamba.models.mamba_lm import MambaLMConfig


def _save_tiny(path, **kw):
    cfg = MambaLMConfig(d_model=16, n_layer=1, vocab_size=40, ssm_cfg={"layer": "Mamba1", "d_state": 4}, **kw)
    MambaLM(cfg).save_pretrained(path)
    return path


def test_missing_directory(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        MambaLM.from_pretrained(tmp_path / "nope")


def test_file_instead_of_directory(tmp_path):
    f = tmp_path / "model.bin"
    f.write_bytes(b"x")
    with pytest.raises(CheckpointError, match="is a file"):
        MambaLM.from_pretrained(f)


def test_config_of_the_wrong_family(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 8}))
    with pytest.raises(CheckpointError, match="not a Mamba language model config.*llama"):
        MambaLM.from_pretrained(tmp_path)


def test_unknown_ssm_cfg_key_is_named(tmp_path):
    _save_tiny(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["ssm_cfg"]["d_stat"] = 8
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="'d_stat' \\(did you mean 'd_state'\\?\\)"):
        MambaLM.from_pretrained(tmp_path)


def test_missing_weights_file(tmp_path):
    _save_tiny(tmp_path)
    os.remove(tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match="no weights"):
        MambaLM.from_pretrained(tmp_path)


def test_missing_unexpected_and_misshaped_tensors_are_all_named(tmp_path):
    _save_tiny(tmp_path)
    from safetensors.torch import load_file, save_file

    state = load_file(tmp_path / "model.safetensors")
    del state["backbone.layers.0.mixer.D"]
    state["backbone.layers.0.mixer.extra"] = torch.zeros(1)
    state["backbone.layers.0.mixer.A_log"] = torch.zeros(3, 3)
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError) as e:
        MambaLM.from_pretrained(tmp_path)
    msg = str(e.value)
    assert "missing backbone.layers.0.mixer.D" in msg
    assert "unexpected backbone.layers.0.mixer.extra" in msg
    assert "backbone.layers.0.mixer.A_log: checkpoint (3, 3) vs model (32, 4)" in msg


def test_corrupt_weights_file(tmp_path):
    _save_tiny(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(CheckpointError, match="cannot read weights file"):
        MambaLM.from_pretrained(tmp_path)


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # the file is hostile on purpose
def test_bin_with_code_is_refused(tmp_path):
    _save_tiny(tmp_path)
    os.remove(tmp_path / "model.safetensors")
    with open(tmp_path / "pytorch_model.bin", "wb") as f:
        pickle.dump({"x": _Payload()}, f)
    with pytest.raises(CheckpointError, match="cannot read weights file.*pytorch_model.bin"):
        MambaLM.from_pretrained(tmp_path)


def test_hybrid_attention_is_refused():
    with pytest.raises(ConfigError, match="hybrid attention"):
        MambaLMConfig(d_model=16, n_layer=2, attn_layer_idx=[1])
