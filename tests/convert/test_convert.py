"""Peer checkpoints written by the tests convert to qmamba models that give the reference model's logits."""

from __future__ import annotations

import pytest
import torch
from peer_files import inputs, peer_config, reference_model, write_run, write_towers
from testing_utils import tiny_tokenizer

from qmamba.cli import main
from qmamba.convert import convert_cobra, convert_mlmamba
from qmamba.errors import CheckpointError
from qmamba.models.multimodal import MultimodalModel

CONVERT = {"cobra": convert_cobra, "mlmamba": convert_mlmamba}


def _logits(model: MultimodalModel) -> torch.Tensor:
    ids, pixels = inputs(model)
    with torch.no_grad():
        return model(ids, pixel_values=pixels).logits  # (2, q + 6, v)


def _assert_same(got: torch.Tensor, want: torch.Tensor) -> None:
    diff = (got - want).abs()
    assert got.shape == want.shape, (got.shape, want.shape)
    assert diff.max() <= 1e-5, f"max |diff| {diff.max():.3e}, mean {diff.mean():.3e}"


@pytest.mark.parametrize("peer", ["cobra", "mlmamba"])
def test_peer_run_converts_to_the_same_logits(peer, tmp_path):
    ref = reference_model(f"tiny-{peer}")
    dino, siglip = write_towers(ref, tmp_path)
    run = write_run(ref, tmp_path, peer)
    model = CONVERT[peer](run, dino, siglip, None, None, preset=f"tiny-{peer}")
    assert model.config.vision.hf_configs == ref.config.vision.hf_configs
    assert (model.config.image_position, model.config.chat_template) == ("prefix", "zephyr")
    _assert_same(_logits(model), _logits(ref))


def test_command_writes_a_directory_that_loads(tmp_path, capsys):
    ref = reference_model("tiny-cobra")
    dino, siglip = write_towers(ref, tmp_path)
    run = write_run(ref, tmp_path, "cobra")
    tiny_tokenizer().save_pretrained(str(tmp_path / "tok"))
    out = tmp_path / "out"
    rc = main(["convert", "cobra", "--run-dir", str(run), "--dinov2", str(dino), "--siglip", str(siglip),
               "--llm-tokenizer", str(tmp_path / "tok"), "--out", str(out), "--preset", "tiny-cobra",
               "--dtype", "fp32"])
    assert rc == 0, capsys.readouterr().err
    assert (out / "tokenizer_config.json").is_file() and (out / "converted_from.json").is_file()
    _assert_same(_logits(MultimodalModel.from_pretrained(out)), _logits(ref))


def test_dinov2_position_table_is_resampled_as_at_run_time(tmp_path):
    """A 3 x 3 timm table resampled once at conversion gives what transformers' run-time interpolation gives
    (both bicubic, antialiased, float32: timm's resampling when the peer builds its tower at 384)."""
    ref = reference_model("tiny-cobra", dino_size=24)  # DINOv2's table is 3 x 3, the run grid 4 x 4
    dino, siglip = write_towers(ref, tmp_path)
    model = convert_cobra(write_run(ref, tmp_path, "cobra"), dino, siglip, None, None, preset="tiny-cobra")
    assert model.vision.towers[0].model.embeddings.position_embeddings.shape == (1, 17, 32)
    _assert_same(_logits(model), _logits(ref))


def test_a_missing_llm_key_is_named(tmp_path):
    ref = reference_model("tiny-cobra")
    dino, siglip = write_towers(ref, tmp_path)
    run = write_run(ref, tmp_path, "cobra", drop="llm.backbone.layers.1.mixer.D")
    with pytest.raises(CheckpointError, match=r"latest-checkpoint\.pt.*llm\.backbone\.layers\.1\.mixer\.D.*Fix"):
        convert_cobra(run, dino, siglip, None, None, preset="tiny-cobra")


def test_an_unknown_tower_key_is_named_with_its_file(tmp_path):
    from safetensors.torch import load_file, save_file

    ref = reference_model("tiny-cobra")
    dino, siglip = write_towers(ref, tmp_path)
    state = load_file(str(dino / "model.safetensors"))
    save_file({**state, "blocks.0.attn.mystery.weight": torch.zeros(2)}, str(dino / "model.safetensors"))
    run = write_run(ref, tmp_path, "cobra")
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*blocks\.0\.attn\.mystery\.weight.*Fix"):
        convert_cobra(run, dino, siglip, None, None, preset="tiny-cobra")


class _Payload:
    """Unpickling this would create a file: the payload a malicious checkpoint carries."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_a_malicious_pickle_is_refused_and_never_runs(tmp_path, capsys):
    ref = reference_model("tiny-cobra")
    dino, siglip = write_towers(ref, tmp_path)
    run = write_run(ref, tmp_path, "cobra")
    target = tmp_path / "pwned"
    torch.save({"model": {"projector": _Payload(target), "llm_backbone": {}}}, run / "checkpoints" /
               "latest-checkpoint.pt")
    with pytest.raises(CheckpointError, match="weights_only=True"):
        convert_cobra(run, dino, siglip, None, None, preset="tiny-cobra")
    rc = main(["convert", "cobra", "--run-dir", str(run), "--dinov2", str(dino), "--siglip", str(siglip),
               "--llm-tokenizer", str(tmp_path), "--out", str(tmp_path / "out"), "--preset", "tiny-cobra"])
    assert rc == 2 and "never runs code" in capsys.readouterr().err
    assert not target.exists() and not (tmp_path / "out").exists()


def test_peer_config_changes_only_what_timm_does_differently():
    config = peer_config("tiny-cobra")
    assert config.vision.hf_configs[1]["hidden_act"] == "gelu"
    assert [c["image_size"] for c in config.vision.hf_configs] == [32, 32]


def test_a_run_that_does_not_fit_the_preset_names_its_keys(tmp_path):
    ref = reference_model("tiny-cobra")
    dino, siglip = write_towers(ref, tmp_path)
    run = write_run(ref, tmp_path, "cobra")
    with pytest.raises(CheckpointError, match=r"latest-checkpoint\.pt: keys no rule .*mixer\.x_proj.*lacks.*dt_bias.*--preset"):
        convert_cobra(run, dino, siglip, None, None, preset="tiny-mlmamba")  # a Mamba-2 LM for Cobra's Mamba-1
