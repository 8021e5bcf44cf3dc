"""Model directories as other tools read them: bf16 (or fp32) weights, sharded past a size with an index,
generation_config.json, ``architectures`` / ``torch_dtype`` in config.json, the chat template as Jinja in
tokenizer_config.json; directories of the earlier layout still load; a damaged shard is one clear error."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file
from testing_utils import tiny_tokenizer

from qmamba import MambaLM
from qmamba.chat_templates import TEMPLATES, get_template, read_chat_template, write_chat_template
from qmamba.data.chat import render_prompt
from qmamba.errors import CheckpointError, ConfigError
from qmamba.models.checkpoints import parse_size
from qmamba.models.mamba_lm import MambaLMConfig
from qmamba.models.multimodal import MultimodalModel
from qmamba.models.presets import get_preset
from qmamba.utils.config import config_to_dict


def _model(name: str = "tiny-qmamba-256") -> MultimodalModel:
    torch.manual_seed(0)
    model = MultimodalModel(get_preset(name)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


def _lm(tie: bool = True) -> MambaLM:
    torch.manual_seed(0)
    return MambaLM(MambaLMConfig(d_model=32, n_layer=2, vocab_size=90, ssm_cfg={"d_state": 8},
                                 tie_embeddings=tie)).eval()


def _nbytes(state: dict) -> int:
    return sum(v.numel() * v.element_size() for v in state.values())


def _in_bf16(model) -> dict:
    """The model's state as a bf16 save stores it: bf16, but A_log and D in fp32 (as the model keeps them)."""
    state = model.state_dict()
    kept = {k for k in state if k.endswith(("A_log", "D"))}
    assert kept
    return {k: v if k in kept or not v.is_floating_point() else v.to(torch.bfloat16) for k, v in state.items()}


def _assert_bit_equal(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    bad = [k for k in want if got[k].dtype != want[k].dtype or not torch.equal(got[k], want[k])]
    assert not bad, f"{len(bad)} tensors differ, e.g. {bad[:3]}"


def test_sharded_bf16_save_reloads_bit_exactly(tmp_path):
    model = _model()
    model.save_pretrained(tmp_path, max_shard_size=_nbytes(model.state_dict()) // 8)  # fp32 bytes / 8: 4+ shards
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) >= 4 and not (tmp_path / "model.safetensors").exists()
    assert all(s.startswith("model-") and s.endswith(f"-of-{len(shards):05d}.safetensors") for s in shards)
    loaded = MultimodalModel.from_pretrained(tmp_path)
    assert loaded.llm.backbone.embedding.weight.dtype == torch.bfloat16  # the stored dtype is kept
    want = _in_bf16(model)
    _assert_bit_equal(loaded.state_dict(), want)
    assert index["metadata"]["total_size"] == _nbytes({k: v for k, v in want.items() if k != "llm.lm_head.weight"})


def test_fp32_on_request_and_loading_in_another_dtype(tmp_path):
    model = _model()
    model.save_pretrained(tmp_path, dtype=torch.float32, max_shard_size="1GB")
    assert (tmp_path / "model.safetensors").is_file() and not (tmp_path / "model.safetensors.index.json").exists()
    assert json.loads((tmp_path / "config.json").read_text())["torch_dtype"] == "float32"
    loaded = MultimodalModel.from_pretrained(tmp_path)
    _assert_bit_equal(loaded.state_dict(), model.state_dict())
    as_bf16 = MultimodalModel.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert as_bf16.llm.lm_head.weight.dtype == torch.bfloat16


def test_config_and_generation_config_are_written(tmp_path):
    model, tok = _model(), tiny_tokenizer()
    model.save_pretrained(tmp_path, tokenizer=tok)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architectures"] == ["MultimodalModel"] and config["torch_dtype"] == "bfloat16"
    assert {k: v for k, v in config.items() if k not in ("architectures", "torch_dtype")} == model.config.to_dict()
    gen = json.loads((tmp_path / "generation_config.json").read_text())
    assert gen == {"max_new_tokens": 128, "do_sample": False, "eos_token_id": tok.eos_token_id,
                   "pad_token_id": tok.pad_token_id}
    from transformers import GenerationConfig

    assert GenerationConfig.from_pretrained(tmp_path).eos_token_id == tok.eos_token_id


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_chat_template_renders_qmambas_prompt(tmp_path, name):
    from qmamba.data.tokenizer import load_tokenizer

    tiny_tokenizer().save_pretrained(str(tmp_path))
    write_chat_template(tmp_path, name)
    tok = load_tokenizer(tmp_path)
    template = get_template(name)
    history = [("user", "<image>\nwhat is it ?"), ("assistant", "a red circle ."), ("user", "and here ?"),
               ("assistant", "")]
    for turns, message in [([], "hi"), (history[:2], "where is it ?"), (history, "what colour ?")]:
        messages = [{"role": r, "content": t} for r, t in [*turns, ("user", message)]]
        want = render_prompt(template, message, turns)
        assert tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == want
        assert tok.apply_chat_template(messages, tokenize=False) == want
    parts = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what is it ?"}]}]
    assert tok.apply_chat_template(parts, tokenize=False) == render_prompt(template, "<image>\nwhat is it ?")
    with pytest.raises(Exception, match="chat turn role 'system'"):
        tok.apply_chat_template([{"role": "system", "content": "x"}], tokenize=False)


def test_model_directory_carries_its_chat_template(tmp_path):
    model, tok = _model(), tiny_tokenizer()
    model.save_pretrained(tmp_path, tokenizer=tok)
    from qmamba.chat_templates import jinja_template

    assert read_chat_template(tmp_path) == jinja_template(get_template(model.config.chat_template))
    from qmamba.data.tokenizer import load_tokenizer

    prompt = load_tokenizer(tmp_path).apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert prompt == render_prompt(get_template(model.config.chat_template), "hi")


def _write_old_format(model: MultimodalModel, path) -> None:
    """A directory as qmamba wrote it before: config.json without architectures / torch_dtype, one fp32
    model.safetensors (tied head left out), preprocessor_config.json, no generation_config.json."""
    path.mkdir()
    (path / "config.json").write_text(json.dumps(model.config.to_dict(), indent=2))
    (path / "preprocessor_config.json").write_text(json.dumps(
        {"transforms": config_to_dict(model.vision.config)["transforms"], "chat_template": "zephyr"}))
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "llm.lm_head.weight"}
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})


def test_old_format_directory_loads(tmp_path):
    model = _model()
    _write_old_format(model, tmp_path / "old")
    loaded = MultimodalModel.from_pretrained(tmp_path / "old")
    _assert_bit_equal(loaded.state_dict(), model.state_dict())  # fp32 kept
    ids = torch.randint(0, 50, (1, 7))
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)


def test_a_new_save_removes_the_weights_of_an_earlier_one(tmp_path):
    model = _model()
    model.save_pretrained(tmp_path, max_shard_size=100_000)
    assert (tmp_path / "model.safetensors.index.json").is_file()
    model.save_pretrained(tmp_path, dtype=torch.float32)
    assert sorted(p.name for p in tmp_path.glob("model*")) == ["model.safetensors"]
    _assert_bit_equal(MultimodalModel.from_pretrained(tmp_path).state_dict(), model.state_dict())


@pytest.mark.parametrize("fmt,safe", [("mamba_ssm", True), ("mamba_ssm", False), ("transformers", True)])
def test_lm_sharded_bf16_round_trip(tmp_path, fmt, safe):
    lm = _lm(tie=fmt != "transformers")
    lm.save_pretrained(tmp_path, format=fmt, safe_serialization=safe, max_shard_size="20KB")
    ext = "safetensors" if safe else "bin"
    stem = "model" if safe else "pytorch_model"
    assert (tmp_path / f"{stem}.{ext}.index.json").is_file() and len(list(tmp_path.glob(f"{stem}-*.{ext}"))) > 1
    loaded = MambaLM.from_pretrained(tmp_path)
    _assert_bit_equal(loaded.state_dict(), _in_bf16(lm))
    config = json.loads((tmp_path / "config.json").read_text())
    if fmt == "transformers":
        assert config["architectures"] == ["MambaForCausalLM"] and config["torch_dtype"] == "bfloat16"
    else:
        assert config == lm.config.to_dict()  # mamba_ssm's MambaConfig(**config) takes no other keys
    assert json.loads((tmp_path / "generation_config.json").read_text())["max_new_tokens"] == 128


def test_lm_fp32_on_request_with_tokenizer_ids(tmp_path):
    lm, tok = _lm(), tiny_tokenizer()
    lm.save_pretrained(tmp_path, dtype="float32", tokenizer=tok)
    _assert_bit_equal(MambaLM.from_pretrained(tmp_path).state_dict(), lm.state_dict())
    gen = json.loads((tmp_path / "generation_config.json").read_text())
    assert gen["eos_token_id"] == tok.eos_token_id and gen["pad_token_id"] == tok.pad_token_id


def _sharded(tmp_path):
    _model().save_pretrained(tmp_path, max_shard_size=100_000)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    return sorted(set(index["weight_map"].values()))


def test_truncated_shard_is_one_error_naming_it(tmp_path):
    shards = _sharded(tmp_path)
    victim = tmp_path / shards[1]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=f"{shards[1]}.*truncated"):
        MultimodalModel.from_pretrained(tmp_path)


def test_missing_shard_is_one_error_naming_it(tmp_path):
    shards = _sharded(tmp_path)
    (tmp_path / shards[-1]).unlink()
    with pytest.raises(CheckpointError, match=f"shard {shards[-1]} listed in model.safetensors.index.json is missing"):
        MultimodalModel.from_pretrained(tmp_path)


def test_shard_without_the_tensors_its_index_names(tmp_path):
    shards = _sharded(tmp_path)
    (tmp_path / shards[0]).write_bytes((tmp_path / shards[1]).read_bytes())
    with pytest.raises(CheckpointError, match=f"puts .* in {shards[0]}, which does not hold them"):
        MultimodalModel.from_pretrained(tmp_path)


def test_shard_sizes_parse_like_transformers():
    assert parse_size("5GB") == 5 * 10**9 and parse_size("500MB") == 5 * 10**8
    assert parse_size("2GiB") == 2 * 2**30 and parse_size("20kb") == 20_000 and parse_size(123) == 123
    with pytest.raises(ConfigError, match="max_shard_size='5 gigs'"):
        parse_size("5 gigs")
