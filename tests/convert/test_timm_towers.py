"""Where timm is installed: timm's own ViTs, built as the peers build them (a checkpoint at another size loaded
with its position table resampled, features from the second-to-last block), give the features of the converted
transformers towers."""

from __future__ import annotations

import pytest
import torch

from qmamba.convert.prismatic import peer_vision, vision_state
from qmamba.models import checkpoints as ckpt
from qmamba.models.presets import get_preset
from qmamba.models.vision import VisionEncoder

timm = pytest.importorskip("timm")


def _timm_vit(size: int, **kw):
    from timm.models.vision_transformer import VisionTransformer

    vit = VisionTransformer(img_size=size, patch_size=8, embed_dim=32, depth=2, num_heads=4, mlp_ratio=2,
                            num_classes=0, **kw)
    with torch.no_grad():
        for p in vit.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return vit.eval()


def _features(vit, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return vit.get_intermediate_layers(x, n={len(vit.blocks) - 2})[0]  # (b, p, d)


def test_timm_towers_give_the_converted_towers_features(tmp_path):
    from safetensors.torch import save_file
    from timm.layers import resample_abs_pos_embed

    dino = _timm_vit(24, reg_tokens=2, no_embed_class=True, init_values=1e-5)  # a 3 x 3 table, run at 4 x 4
    siglip = _timm_vit(32, class_token=False, global_pool="map")
    save_file({k: v.contiguous() for k, v in dino.state_dict().items()}, str(tmp_path / "dino.safetensors"))
    save_file({k: v.contiguous() for k, v in siglip.state_dict().items()}, str(tmp_path / "siglip.safetensors"))
    run_dino = _timm_vit(32, reg_tokens=2, no_embed_class=True, init_values=1e-5)  # what timm builds at 32
    state = dict(dino.state_dict())
    state["pos_embed"] = resample_abs_pos_embed(state["pos_embed"], (4, 4), num_prefix_tokens=0)
    run_dino.load_state_dict(state)
    x = torch.randn(2, 3, 32, 32)
    want = torch.cat([_features(run_dino, x), _features(siglip, x)], dim=-1)  # (2, 16, 64)

    config = peer_vision(get_preset("tiny-cobra"), 32, None)
    tensors, _ = vision_state(config, tmp_path / "dino.safetensors", tmp_path / "siglip.safetensors")
    with torch.device("meta"):
        encoder = VisionEncoder(config.vision)
    encoder.to_empty(device="cpu")
    masks = {k: torch.zeros_like(v) for k, v in encoder.state_dict().items() if k.endswith("mask_token")}
    ckpt.load_into(encoder, {**masks, **{k.removeprefix("vision."): v for k, v in tensors.items()}}, "test")
    with torch.no_grad():
        got = encoder(torch.cat([x, x], dim=1))
    diff = (got - want).abs()
    assert diff.max() <= 1e-5, f"max |diff| {diff.max():.3e}, mean {diff.mean():.3e}"
