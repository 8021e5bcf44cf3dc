"""A tiny build end to end: the folders load as qmamba and transformers checkpoints, the record and README
are written, the size budget is enforced, builds repeat for a seed, and the CLI drives it."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from micro_assets_testkit import tiny_build, tiny_build_kwargs, tiny_world

from qmamba.cli import main
from qmamba.data.image import ImageTransformConfig, MultiImageTransform, load_image
from qmamba.data.tokenizer import load_tokenizer
from qmamba.errors import ConfigError
from qmamba.infer import generate
from qmamba.micro.build import build_micro_assets
from qmamba.micro.pretrain_vision import image_transform
from qmamba.micro.report import check_size
from qmamba.models.mamba_lm import MambaLM
from qmamba.models.vision import VisionEncoder


def test_the_lm_folder_loads_and_generates(tmp_path_factory):
    out, record = tiny_build(tmp_path_factory)
    lm = MambaLM.from_pretrained(out / "mamba")
    tok = load_tokenizer(out / "mamba")
    assert lm.config.vocab_size == len(tok) == record["tokenizer"]["vocab_size"]
    assert lm.config.d_model == 192 and lm.config.n_layer == 4
    prompt = torch.tensor([tok.encode("<|user|>\nWhat color is the circle?<|endoftext|>\n<|assistant|>\n")])
    ids = generate(lm, prompt, max_new_tokens=5, eos_token_id=tok.eos_token_id)
    assert ids.shape[1] > prompt.shape[1] and int(ids.max()) < len(tok)
    assert isinstance(tok.decode(ids[0, prompt.shape[1]:]), str)
    assert json.loads((out / "mamba" / "config.json").read_text())["ssm_cfg"]["d_state"] == 16  # mamba_ssm format


def test_the_siglip_folder_loads_in_qmamba_and_transformers_with_the_same_weights(tmp_path_factory):
    from transformers import SiglipModel

    out, _ = tiny_build(tmp_path_factory)
    encoder = VisionEncoder.from_pretrained(out / "siglip")
    assert (encoder.config.kind, encoder.num_patches, encoder.d_vision) == ("siglip", 64, 128)
    full = SiglipModel.from_pretrained(str(out / "siglip")).eval()
    image = load_image(next((tiny_world(tmp_path_factory).root / "images" / "align").iterdir()))
    pixels = MultiImageTransform(encoder.config.transforms)([image])  # (1, 3, 64, 64)
    ours = encoder(pixels)  # (1, 64, 128): layer -2
    with torch.no_grad():
        theirs = full.vision_model(pixel_values=pixels, output_hidden_states=True).hidden_states[-2]
    assert torch.allclose(ours, theirs, atol=1e-5), float((ours - theirs).abs().max())
    assert ImageTransformConfig.from_hf_preprocessor(out / "siglip") == image_transform()
    assert load_tokenizer(out / "siglip").encode("<|user|>") == [1]


def test_the_record_and_readme_are_written(tmp_path_factory):
    out, record = tiny_build(tmp_path_factory)
    saved = json.loads((out / "build.json").read_text())
    assert saved["seed"] == 0 and saved["lm"]["config"]["steps"] == 5 and saved["vision"]["config"]["steps"] == 5
    for key in ("heldout_loss", "heldout_loss_before", "train_loss", "answer_accuracy_grounded"):
        assert key in saved["lm"]
    for key in ("retrieval_top1", "retrieval_top1_before", "retrieval_chance"):
        assert key in saved["vision"]
    assert set(saved["versions"]) >= {"torch", "transformers", "tokenizers", "qmamba"}
    assert saved["total_bytes"] == sum(p.stat().st_size for d in ("siglip", "mamba") for p in (out / d).iterdir())
    assert all(name.endswith((".json", ".safetensors")) for name in saved["files"])
    # both tunings ran: the second one on the choice drills too, from the first one's LM
    assert saved["lm"]["config"]["choice_sft_steps"] == 2 and "choice" in saved["lm"]["config"]["choice_sft_kinds"]
    assert saved["lm"]["sft_loss"] > 0 and saved["lm"]["choice_sft_loss"] > 0
    readme = (out / "README.md").read_text()
    assert "qmamba micro build" in readme and f"{record['lm']['heldout_loss']:.3f}" in readme
    assert "--choice-sft-steps 2" in readme and "ran afterwards" not in readme


def test_the_size_budget_is_enforced():
    assert check_size({"a": 10, "b": 5}, limit=15) == 15
    with pytest.raises(ConfigError, match="over the 0 MB budget.*big.safetensors"):
        check_size({"big.safetensors": 30, "small.json": 1}, limit=20)


def test_a_build_refuses_to_overwrite_unless_asked(tmp_path_factory):
    out, _ = tiny_build(tmp_path_factory)
    with pytest.raises(ConfigError, match="already holds siglip, mamba, build.json, README.md"):
        build_micro_assets(out, world_dir=tiny_world(tmp_path_factory).root, **tiny_build_kwargs())


def test_an_oversized_build_fails_and_leaves_the_earlier_one_intact(tmp_path_factory, monkeypatch):
    from qmamba.micro import report

    out, _ = tiny_build(tmp_path_factory, "kept")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    monkeypatch.setattr(report, "SIZE_LIMIT", 1_000_000)
    with pytest.raises(ConfigError, match="over the 1 MB budget"):
        build_micro_assets(out, world_dir=tiny_world(tmp_path_factory).root, overwrite=True,
                           **tiny_build_kwargs(seed=5))
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before  # no staging folder left, nothing replaced
    monkeypatch.undo()
    build_micro_assets(out, world_dir=tiny_world(tmp_path_factory).root, overwrite=True, **tiny_build_kwargs(seed=5))
    assert json.loads((out / "build.json").read_text())["seed"] == 5
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "build.json", "mamba", "siglip"]


def test_same_seed_same_build_other_seed_other_build(tmp_path_factory):
    a, ra = tiny_build(tmp_path_factory, "first")
    b, rb = tiny_build(tmp_path_factory, "second")
    _, rc = tiny_build(tmp_path_factory, "third", seed=1)
    assert (a / "mamba" / "tokenizer.json").read_bytes() == (b / "mamba" / "tokenizer.json").read_bytes()
    for part in ("lm", "vision"):
        assert ra[part]["first_losses"] == rb[part]["first_losses"]
        assert ra[part]["first_losses"] != rc[part]["first_losses"]
    assert (a / "mamba" / "model.safetensors").read_bytes() == (b / "mamba" / "model.safetensors").read_bytes()


def test_a_build_that_trains_the_encoder_in_a_second_process_gives_the_same_weights(tmp_path_factory, caplog):
    a, ra = tiny_build(tmp_path_factory, "first")
    out = tmp_path_factory.mktemp("concurrent")
    with caplog.at_level(logging.INFO, logger="qmamba"):
        rb = build_micro_assets(out, world_dir=tiny_world(tmp_path_factory).root, concurrent=True,
                                **tiny_build_kwargs())
    assert "vision encoder training in a second process" in caplog.text
    for part in ("lm", "vision"):
        assert ra[part]["first_losses"] == rb[part]["first_losses"]
    for weights in ("mamba/model.safetensors", "siglip/model.safetensors"):
        assert (a / weights).read_bytes() == (out / weights).read_bytes(), weights


def test_the_cli_passes_its_options_and_prints_a_summary(monkeypatch, capsys, tmp_path):
    from qmamba.micro import build

    seen = {}

    def fake(out, **kwargs):
        seen.update(kwargs, out=out)
        return {"seconds": {"total": 60.0}, "total_bytes": 10_500_000,
                "lm": {"heldout_loss": 0.5, "answer_accuracy_grounded": 0.9},
                "vision": {"retrieval_top1": 0.8, "retrieval_chance": 1 / 64}}

    monkeypatch.setattr(build, "build_micro_assets", fake)
    assert main(["micro", "build", "--out", str(tmp_path), "--seed", "3", "--lm-steps", "7", "--vision-steps", "9",
                 "--world", "w", "--device", "cpu", "--quiet", "--world-size", "100", "--lm-batch-size", "12",
                 "--sft-steps", "4", "--choice-sft-steps", "6"]) == 0
    lm_config = seen.pop("lm_config")
    assert seen == {"out": str(tmp_path), "seed": 3, "device": "cpu", "world_size": 100, "lm_steps": 7,
                    "vision_steps": 9, "world_dir": "w", "show_progress": False, "overwrite": False}
    assert (lm_config.steps, lm_config.batch_size, lm_config.micro_batch_size, lm_config.seed) == (7, 12, 4, 3)
    assert (lm_config.sft_steps, lm_config.choice_sft_steps) == (4, 6)
    summary = json.loads(capsys.readouterr().out)
    assert summary["minutes"] == 1.0 and summary["megabytes"] == 10.5 and summary["siglip_retrieval_top1"] == 0.8


def test_the_cli_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["micro", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for option in ("--out", "--seed", "--device", "--lm-steps", "--vision-steps", "--world"):
        assert option in text
