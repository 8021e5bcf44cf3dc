"""The small size's build path at a few seconds on CPU: ``qmamba micro build --size small`` with every size
shrunk, its world (harder, styled, with a held-out style), its towers at another resolution, the auxiliary
cell loss, the gates it measures and prints, and the cache folder it builds into on first use."""

from __future__ import annotations

import dataclasses
import json

import pytest

from qmamba.cli import main
from qmamba.errors import ConfigError
from qmamba.micro import sizes
from qmamba.micro.build import backbones
from qmamba.micro.gates import open_question_accuracy
from qmamba.micro.sizes import SMALL, cache_dir, is_built
from qmamba.models.mamba_lm import MambaLM
from qmamba.models.vision import VisionEncoder

SHRUNK = dataclasses.replace(
    SMALL,
    vision_tower={**SMALL.vision_tower, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                  "num_attention_heads": 2, "patch_size": 16, "image_size": 96},
    text_tower={**SMALL.text_tower, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                "num_attention_heads": 2},
    lm={"d_model": 32, "n_layer": 1, "ssm_cfg": {"d_state": 4}},
    world={**SMALL.world, "image_size": 96, "max_objects": 6, "workers": 0},
    world_size=40, vocab_size=400, eval_images=6,
    lm_train={"steps": 3, "batch_size": 2, "micro_batch_size": 0, "seq_len": 64, "eval_rows": 2,
              "eval_questions": 4, "heldout_fraction": 0.2, "sft_steps": 2, "sft_batch_size": 2, "sft_max_len": 384, "choice_sft_steps": 2},
    vision_train={"steps": 3, "batch_size": 8, "heldout": 16, "eval_batch": 8, "text_len": 96, "aux_weight": 1.0},
    probe={"n_train": 20, "n_test": None, "steps": 20},
)


@pytest.fixture(scope="module")
def small_build(tmp_path_factory):
    """(out, stdout, exit code) of a shrunk 'qmamba micro build --size small' into a QMAMBA_CACHE folder."""
    root = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(sizes.CACHE_ENV, str(root))
        mp.setitem(sizes.SIZES, "small", SHRUNK)
        import io
        from contextlib import redirect_stdout

        buf = io.StringIO()
        with redirect_stdout(buf):
            code = main(["micro", "build", "--size", "small", "--device", "cpu", "--quiet"])
        out = cache_dir("small")
    return out, buf.getvalue(), code


def test_a_small_build_writes_its_backbones_in_the_same_formats_into_the_cache(small_build, tmp_path_factory):
    out, text, _ = small_build
    assert out.name == "micro-small" and is_built(out)
    assert f"into {out}" in text
    lm = MambaLM.from_pretrained(out / "mamba")
    assert (lm.config.d_model, lm.config.n_layer) == (32, 1)
    encoder = VisionEncoder.from_pretrained(out / "siglip")
    assert encoder.config.image_size == 96 and encoder.num_patches == 36  # above the tiny 64 px
    assert not any("aux" in k or "shape" in k for k in encoder.state_dict())  # the cell heads are not saved
    record = json.loads((out / "build.json").read_text())
    assert record["size"] == "small" and record["vision"]["config"]["aux_weight"] == 1.0
    assert record["world"]["grid"] == 4 and record["world"]["image_size"] == 96


def test_a_small_build_measures_and_prints_its_gates(small_build):
    out, text, code = small_build
    gates = json.loads((out / "build.json").read_text())["gates"]
    assert set(gates["figures"]) == set(SMALL.gates) == set(gates["passed"])
    for name, figure in gates["figures"].items():
        assert 0.0 <= figure <= 1.0, name
        assert f"gate {name}" in text
        assert gates["passed"][name] == (figure >= SMALL.gates[name])
    assert set(gates["pope"]) == {"random", "popular", "adversarial"} and "circular_chance" in gates["mmbench"]
    assert "light" in gates["probe_heldout_style"] and "held-out style 'light'" in text
    # what limits a failed build: grounded accuracy per question type, the MMBench-like letters, the LM's phases
    assert gates["grounded_by_type"] and "lm_grounded by question type" in text
    assert sum(gates["mmbench"]["letters"].values()) == gates["mmbench"]["questions"] and "letters picked" in text
    lm = json.loads((out / "build.json").read_text())["lm"]
    assert {"tokenize", "pack", "sft", "choice_sft", "answer_accuracy"} <= set(lm["phase_seconds"])
    assert gates["figures"]["lm_grounded"] == open_question_accuracy(gates["grounded_by_type"], None)
    assert code == (0 if gates["all_passed"] else 2)  # a shrunk build fails its gates: exit code 2
    assert code == 2 and "FAILED" in text


def test_first_use_builds_once_then_says_which_folder_it_uses(small_build, monkeypatch):
    out, _, _ = small_build
    said = []
    assert backbones("small", folder=out, say=said.append) == out
    assert said == [f"using the small micro backbones in {out}"]
    monkeypatch.setenv(sizes.CACHE_ENV, str(out.parent / "elsewhere"))
    with pytest.raises(ConfigError, match="not built in .*qmamba micro build --size small --device cuda"):
        backbones("small", build=False)


def test_the_flags_override_a_size_and_tiny_needs_out(capsys):
    import argparse

    from qmamba.commands.micro import sized

    args = argparse.Namespace(lm_steps=7, lm_batch_size=None, sft_steps=None, choice_sft_steps=3, vision_steps=5,
                              world_size=None)
    size = sized("small", args)
    assert size.lm_train["steps"] == 7 and size.lm_train["choice_sft_steps"] == 3
    assert size.lm_train["batch_size"] == SMALL.lm_train["batch_size"] and size.vision_train["steps"] == 5
    assert size.world_size == SMALL.world_size
    assert main(["micro", "build", "--device", "cpu"]) != 0
    assert "needs --out" in capsys.readouterr().err


def test_the_grounded_gate_counts_the_open_questions_not_the_caption_requests():
    by_type = {"caption": {"accuracy": 0.25, "questions": 4}, "count": {"accuracy": 1.0, "questions": 3},
               "query_color": {"accuracy": 0.5, "questions": 2}}
    assert open_question_accuracy(by_type, 0.1) == pytest.approx((3 + 1) / 5)
    assert open_question_accuracy({}, 0.7) == 0.7, "a record without types: the overall accuracy"
    assert open_question_accuracy({"caption": {"accuracy": 1.0, "questions": 2}}, 0.6) == 0.6
