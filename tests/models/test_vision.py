"""Vision encoders against transformers: tiny random towers saved to tmp dirs, loaded back through
``VisionEncoder.from_pretrained`` and compared with the transformers model's own ``hidden_states``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn

from qmamba.data.image import MultiImageTransform
from qmamba.errors import CheckpointError, ConfigError, InputError
from qmamba.models import checkpoints as ckpt
from qmamba.models.vision import VISION_PRESETS, VisionConfig, VisionEncoder, vision_preset
from qmamba.utils.config import config_from_dict, config_to_dict

transformers = pytest.importorskip("transformers")

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, patch_size=8)
TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4, vocab_size=100,
            bos_token_id=1, eos_token_id=2, pad_token_id=0)
KINDS = ["siglip-full", "siglip-vision", "clip-full", "clip-vision", "dinov2", "dinov2-reg"]
PREFIX = {"siglip-full": 0, "siglip-vision": 0, "clip-full": 1, "clip-vision": 1, "dinov2": 1, "dinov2-reg": 3}


def _processor(kind: str):
    t = transformers
    if kind.startswith("siglip"):
        return t.SiglipImageProcessorPil(size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    if kind.startswith("clip"):
        return t.CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return t.BitImageProcessorPil(size={"shortest_edge": 36}, crop_size={"height": 32, "width": 32},
                                  image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])


def _hf_model(kind: str, **extra) -> nn.Module:
    t = transformers
    vit = dict(TINY, intermediate_size=64, image_size=32, **extra)
    dino = dict(TINY, mlp_ratio=2, image_size=24, **extra)  # its checkpoint is 24 px, it runs at 32: interpolates
    return {
        "siglip-full": lambda: t.SiglipModel(t.SiglipConfig(vision_config=vit, text_config=TEXT)),
        "siglip-vision": lambda: t.SiglipVisionModel(t.SiglipVisionConfig(**vit)),
        "clip-full": lambda: t.CLIPModel(t.CLIPConfig(vision_config=vit, text_config=TEXT)),
        "clip-vision": lambda: t.CLIPVisionModel(t.CLIPVisionConfig(**vit)),
        "dinov2": lambda: t.Dinov2Model(t.Dinov2Config(**dino)),
        "dinov2-reg": lambda: t.Dinov2WithRegistersModel(t.Dinov2WithRegistersConfig(num_register_tokens=2, **dino)),
    }[kind]().eval()


def _save(kind: str, path, **extra) -> nn.Module:
    """Save a tiny random checkpoint + preprocessor to ``path``; return its vision model (eval)."""
    model = _hf_model(kind, **extra)
    model.save_pretrained(path)
    _processor(kind).save_pretrained(path)
    return model.vision_model if kind.endswith("-full") else model


@pytest.fixture(scope="module")
def towers(tmp_path_factory):
    """kind -> (checkpoint dir, the transformers vision model saved there)."""
    torch.manual_seed(0)
    out = {}
    for kind in KINDS:
        path = tmp_path_factory.mktemp(kind)
        out[kind] = (path, _save(kind, path))
    return out


def _images(n: int = 2) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (40 + 7 * i, 50 - 5 * i, 3), dtype=np.uint8)) for i in range(n)]


def _reference(model: nn.Module, pixels: torch.Tensor, prefix: int, layer: int = -2, **kwargs) -> torch.Tensor:
    with torch.no_grad():
        states = model(pixel_values=pixels, output_hidden_states=True, **kwargs).hidden_states
    return states[layer][:, prefix:]  # (b, p, d)


def _assert_close(got: torch.Tensor, want: torch.Tensor, what: str, atol: float = 1e-5) -> None:
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} vs {tuple(want.shape)}"
    diff = (got.double() - want.double()).abs()
    assert diff.max() <= atol, f"{what}: max abs {diff.max():.3g}, mean abs {diff.mean():.3g}"


# ------------------------------------------------------------------------------------- each tower kind
@pytest.mark.parametrize("kind", KINDS)
def test_tower_gives_patch_features_of_the_second_to_last_layer(towers, kind):
    path, hf_model = towers[kind]
    encoder = VisionEncoder.from_pretrained(path)
    assert encoder.config.kind == kind.split("-")[0]
    assert (encoder.num_patches, encoder.d_vision, encoder.grid) == (16, 32, (4, 4))
    pixels = MultiImageTransform(encoder.config.transforms)(_images())  # (2, 3, 32, 32)
    assert pixels.shape == (2, 3, 32, 32)
    out = encoder(pixels)
    assert out.shape == (2, 16, 32)
    _assert_close(out, _reference(hf_model, pixels, PREFIX[kind]), f"{kind} vs hidden_states[-2]")
    assert len(list(encoder.towers[0].model.modules())) < len(list(hf_model.modules()))  # last layer not built


@pytest.mark.parametrize("layer", [-1, 1])
def test_feature_layer_selects_that_hidden_state(towers, layer):
    path, hf_model = towers["clip-vision"]
    encoder = VisionEncoder.from_pretrained(path, feature_layer=layer)
    pixels = MultiImageTransform(encoder.config.transforms)(_images())
    _assert_close(encoder(pixels), _reference(hf_model, pixels, 1, layer), f"feature_layer={layer}")
    assert len(encoder.towers[0].model.encoder.layers) == (2 if layer == -1 else 1)


def test_feature_layer_out_of_range(towers):
    with pytest.raises(ConfigError, match="feature_layer=-3 selects no layer of a 2-layer tower"):
        VisionEncoder.from_pretrained(towers["siglip-vision"][0], feature_layer=-3)


@pytest.mark.parametrize("kind", ["siglip-vision", "clip-full"])
def test_other_image_size_interpolates_positions(towers, kind):
    path, hf_model = towers[kind]
    encoder = VisionEncoder.from_pretrained(path, image_size=48)
    assert encoder.num_patches == 36 and MultiImageTransform(encoder.config.transforms).image_size == 48
    pixels = MultiImageTransform(encoder.config.transforms)(_images())  # (2, 3, 48, 48)
    want = _reference(hf_model, pixels, PREFIX[kind], interpolate_pos_encoding=True)
    _assert_close(encoder(pixels), want, f"{kind} at 48 px")


# --------------------------------------------------------------------------------- checkpoint formats
def _rewrite(src, dst, rename) -> None:
    """Copy a checkpoint dir, renaming its tensors with ``rename(key, value) -> dict``."""
    for name in ("config.json", "preprocessor_config.json"):
        (dst / name).write_text((src / name).read_text())
    state = {}
    for key, value in load_file(src / "model.safetensors").items():
        state.update(rename(key, value))
    save_file(state, dst / "model.safetensors", metadata={"format": "pt"})


def test_legacy_vision_model_prefix(towers, tmp_path):
    path, hf_model = towers["clip-vision"]
    _rewrite(path, tmp_path, lambda k, v: {"vision_model." + k: v})
    extra = {"vision_model.embeddings.position_ids": torch.arange(17)[None]}  # old transformers saved it
    save_file(load_file(tmp_path / "model.safetensors") | extra, tmp_path / "model.safetensors")
    encoder = VisionEncoder.from_pretrained(tmp_path)
    pixels = MultiImageTransform(encoder.config.transforms)(_images())
    _assert_close(encoder(pixels), _reference(hf_model, pixels, 1), "CLIP with vision_model. prefix")


_OLD_DINO = {".attention.q_proj.": ".attention.attention.query.", ".attention.k_proj.": ".attention.attention.key.",
             ".attention.v_proj.": ".attention.attention.value.", ".attention.o_proj.": ".attention.output.dense.",
             ".mlp.down_proj.": ".mlp.weights_out."}


def _old_dinov2_names(key: str, value: torch.Tensor) -> dict:
    for new, old in _OLD_DINO.items():
        key = key.replace(new, old)
    return {key: value}


def test_legacy_dinov2_names(towers, tmp_path):
    path, hf_model = towers["dinov2-reg"]
    _rewrite(path, tmp_path, _old_dinov2_names)
    assert any(".attention.attention.query." in k for k in load_file(tmp_path / "model.safetensors"))
    encoder = VisionEncoder.from_pretrained(tmp_path)
    pixels = MultiImageTransform(encoder.config.transforms)(_images())
    _assert_close(encoder(pixels), _reference(hf_model, pixels, 3), "DINOv2 with older attention names")


def test_legacy_dinov2_swiglu(tmp_path):
    torch.manual_seed(1)
    new, old = tmp_path / "new", tmp_path / "old"
    new.mkdir()
    old.mkdir()
    hf_model = _save("dinov2", new, use_swiglu_ffn=True)
    state = load_file(new / "model.safetensors")

    def to_old(key, value):  # older DINOv2 checkpoints fuse [gate; up] into one weights_in matrix
        if ".up_proj." in key:
            return {}
        if ".gate_proj." in key:
            return {key.replace(".gate_proj.", ".weights_in."): torch.cat([value, state[key.replace("gate", "up")]])}
        return _old_dinov2_names(key, value)

    _rewrite(new, old, to_old)
    assert any(".mlp.weights_in." in k for k in load_file(old / "model.safetensors"))
    encoder = VisionEncoder.from_pretrained(old)
    pixels = MultiImageTransform(encoder.config.transforms)(_images())
    _assert_close(encoder(pixels), _reference(hf_model, pixels, 1), "DINOv2 SwiGLU with fused weights_in")


# ------------------------------------------------------------------------------------------- fused
def test_dinosiglip_is_the_channel_concat_of_its_towers(towers):
    dino_dir, siglip_dir = towers["dinov2-reg"][0], towers["siglip-full"][0]
    fused = VisionEncoder.from_pretrained([dino_dir, siglip_dir])
    assert fused.config.kind == "dinosiglip" and fused.config.image_size == 32
    assert (fused.num_patches, fused.d_vision) == (16, 64)
    pixels = MultiImageTransform(fused.config.transforms)(_images())  # (2, 6, 32, 32)
    assert pixels.shape == (2, 6, 32, 32)
    dino = VisionEncoder.from_pretrained(dino_dir, image_size=32)
    siglip = VisionEncoder.from_pretrained(siglip_dir)
    assert torch.equal(pixels[:, :3], MultiImageTransform(dino.config.transforms)(_images()))
    assert torch.equal(pixels[:, 3:], MultiImageTransform(siglip.config.transforms)(_images()))
    want = torch.cat([dino(pixels[:, :3]), siglip(pixels[:, 3:])], dim=-1)  # (2, 16, 64)
    assert torch.equal(fused(pixels), want)


def test_dinosiglip_order_and_patch_mismatch(towers):
    with pytest.raises(ConfigError, match=r"\[dinov2, siglip\]"):
        VisionEncoder.from_pretrained([towers["siglip-vision"][0], towers["dinov2"][0]])
    config = vision_preset("dinosiglip-tiny")
    config.hf_configs[1] = dict(config.hf_configs[1], patch_size=16)
    with pytest.raises(ConfigError, match=r"dinov2 gives 4x4=16 \(patch 8\), siglip gives 2x2=4 \(patch 16\)"):
        VisionConfig(**config.__dict__)


# ------------------------------------------------------------------------------------------- errors
def test_wrong_family_missing_dir_and_kind_mismatch(towers, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 32}))
    with pytest.raises(CheckpointError, match=r"config.json: model_type 'llama' is not a vision encoder"):
        VisionEncoder.from_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="does not exist"):
        VisionEncoder.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="kind='clip' but the directories hold a siglip encoder"):
        VisionEncoder.from_pretrained(towers["siglip-vision"][0], kind="clip")


def test_missing_preprocessor_config(towers, tmp_path):
    (tmp_path / "config.json").write_text((towers["siglip-vision"][0] / "config.json").read_text())
    with pytest.raises(CheckpointError, match="preprocessor_config.json does not exist"):
        VisionEncoder.from_pretrained(tmp_path)


def test_missing_and_unexpected_weights_are_named(towers, tmp_path):
    path = towers["siglip-vision"][0]

    def drop_and_add(key, value):
        if key == "encoder.layers.0.mlp.fc1.weight":
            return {"encoder.layers.0.mlp.fc9.weight": value}
        return {key: value}

    _rewrite(path, tmp_path, drop_and_add)
    with pytest.raises(CheckpointError) as info:
        VisionEncoder.from_pretrained(tmp_path)
    assert "missing encoder.layers.0.mlp.fc1.weight" in str(info.value)
    assert "unexpected encoder.layers.0.mlp.fc9.weight" in str(info.value)


def test_pixel_shape_error(towers):
    encoder = VisionEncoder.from_pretrained(towers["siglip-vision"][0])
    with pytest.raises(InputError, match=r"expected \(b, 3, 32, 32\)"):
        encoder(torch.zeros(1, 6, 32, 32))


# ------------------------------------------------------------------------------------------ freezing
def test_frozen_by_default_and_unfreezing(towers):
    encoder = VisionEncoder.from_pretrained(towers["clip-vision"][0])
    parent = nn.Sequential(encoder, nn.Linear(32, 4)).train()
    assert encoder.frozen and not encoder.training and not any(m.training for m in encoder.modules())
    assert not any(p.requires_grad for p in encoder.parameters())
    pixels = MultiImageTransform(encoder.config.transforms)(_images()).requires_grad_(True)
    assert not encoder(pixels).requires_grad  # ran under no_grad

    encoder.set_frozen(False)
    parent.train()
    assert encoder.training and not encoder.config.frozen
    encoder(pixels).sum().backward()
    grads = [p.grad for p in encoder.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)

    encoder.set_frozen(True)
    assert not encoder.training and encoder.config.frozen


# -------------------------------------------------------------------------------------- round trip
@pytest.mark.parametrize("kind", ["siglip-full", "clip-vision", "dinov2-reg"])
@pytest.mark.parametrize("build", ["meta", "cpu"])
def test_rebuild_from_config_and_state_dict(towers, kind, build):
    encoder = VisionEncoder.from_pretrained(towers[kind][0])
    stored = json.loads(json.dumps(config_to_dict(encoder.config)))  # as a multimodal config.json holds it
    config = config_from_dict(VisionConfig, stored, "vision")
    if build == "meta":  # how a combined checkpoint loads: no random init, then every tensor from the file
        with torch.device("meta"):
            rebuilt = VisionEncoder(config)
        rebuilt.to_empty(device="cpu")
    else:
        rebuilt = VisionEncoder(config)
    ckpt.load_into(rebuilt, encoder.state_dict(), "round trip")
    pixels = MultiImageTransform(encoder.config.transforms)(_images())
    assert torch.equal(rebuilt(pixels), encoder(pixels))
    assert rebuilt.frozen and not rebuilt.training
    assert all(k.startswith("towers.0.model.") for k in encoder.state_dict())


# ----------------------------------------------------------------------------------------- presets
FULL = {"siglip-so400m-patch14-384": (729, 1152, 26), "dinov2-vitl14-reg4": (729, 1024, 23),
        "dinosiglip-384": (729, 2176, 23), "clip-vit-l-336": (576, 1024, 23),
        "siglip-micro": (64, 128, 3)}  # the micro-world's encoder: 64 px / patch 8, 4 layers cut at -2


@pytest.mark.parametrize("name", list(VISION_PRESETS))
def test_presets(name):
    config = vision_preset(name)
    assert config_from_dict(VisionConfig, json.loads(json.dumps(config_to_dict(config))), name) == config
    with torch.device("meta"):
        encoder = VisionEncoder(config)
    if name in FULL:
        patches, width, layers = FULL[name]
        assert (encoder.num_patches, encoder.d_vision) == (patches, width)
        assert sum(1 for m in encoder.towers[0].model.modules() if type(m).__name__.endswith("Layer")) == layers
    else:
        assert (encoder.num_patches, encoder.d_vision) == (16, 64 if name.startswith("dinosiglip") else 32)
        pixels = MultiImageTransform(config.transforms)(_images())
        assert VisionEncoder(config)(pixels).shape == (2, 16, encoder.d_vision)


def test_preset_overrides_and_unknown():
    config = vision_preset("dinosiglip-384", resize_strategy="letterbox", feature_layer=-1)
    assert [t["resize_strategy"] for t in config.transforms] == ["letterbox", "letterbox"]
    assert config.feature_layer == -1
    with pytest.raises(ConfigError, match="unknown"):
        vision_preset("siglip-huge")
