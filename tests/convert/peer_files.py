"""Tiny checkpoints in the peers' own formats, written from a qmamba model's weights.

The inverse of the converters, written independently of them (transformers names -> timm / open_clip names,
qmamba keys -> Cobra's and ML-Mamba's module dicts), so a conversion round trip checks both directions.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from qmamba.models.multimodal import MultimodalModel
from qmamba.models.presets import get_preset

SIZE = 32  # the tiny towers' run size (patch 8 -> 4 x 4 patches)


def peer_config(preset: str, dino_size: int = SIZE):
    """The preset as the peers run it: both towers built at the run size, SigLIP with timm's exact GELU.
    ``dino_size``: DINOv2's checkpoint size (another size: its position table is interpolated at run time)."""
    config = get_preset(preset)
    dino, siglip = config.vision.hf_configs
    config.vision.hf_configs = [{**dino, "image_size": dino_size},
                                {**siglip, "image_size": SIZE, "hidden_act": "gelu"}]
    config.image_position = "prefix"
    return config


def reference_model(preset: str, dino_size: int = SIZE) -> MultimodalModel:
    torch.manual_seed(0)
    model = MultimodalModel(peer_config(preset, dino_size)).eval()
    with torch.no_grad():  # no parameter left at a constant init, so a misplaced tensor shows in the logits
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


def _block_names(prefix: str, qkv: str, out: str, norms: tuple[str, str], scales: bool) -> dict[str, str]:
    names = {f"{prefix}{norms[0]}": "norm1", f"{prefix}{norms[1]}": "norm2", f"{prefix}{qkv}.{out}": "attn.proj",
             f"{prefix}mlp.fc1": "mlp.fc1", f"{prefix}mlp.fc2": "mlp.fc2"}
    return names if not scales else {**names, f"{prefix}layer_scale1": "ls1", f"{prefix}layer_scale2": "ls2"}


def _timm_tower(tower, kind: str, n_blocks: int) -> dict[str, torch.Tensor]:
    """One transformers tower -> timm names; blocks past the ones the tower built and the final norm / pooling
    head get random tensors (timm's file holds the whole ViT)."""
    sd = {k: v.clone() for k, v in tower.model.state_dict().items()}
    layers, qkv = ("encoder.layer.", "attention") if kind == "dinov2" else ("encoder.layers.", "self_attn")
    d = tower.d
    out: dict[str, torch.Tensor] = {}
    for i in range(n_blocks):
        p = f"{layers}{i}."
        if f"{p}{qkv}.q_proj.weight" not in sd:  # a block past the feature layer: random
            for name, shape in (("attn.qkv.weight", (3 * d, d)), ("attn.qkv.bias", (3 * d,)),
                                ("attn.proj.weight", (d, d)), ("norm1.weight", (d,)), ("mlp.fc1.weight", (2 * d, d))):
                out[f"blocks.{i}.{name}"] = torch.randn(shape)
            continue
        for part in ("weight", "bias"):
            out[f"blocks.{i}.attn.qkv.{part}"] = torch.cat([sd[f"{p}{qkv}.{n}_proj.{part}"] for n in "qkv"])
        norms = ("norm1", "norm2") if kind == "dinov2" else ("layer_norm1", "layer_norm2")
        names = _block_names(p, qkv, "o_proj" if kind == "dinov2" else "out_proj", norms, kind == "dinov2")
        for key, value in sd.items():
            for ours, theirs in names.items():
                if key.startswith(ours + "."):
                    leaf = key[len(ours) + 1:]
                    out[f"blocks.{i}.{theirs}.{'gamma' if leaf == 'lambda1' else leaf}"] = value
    out["norm.weight"], out["norm.bias"] = torch.randn(d), torch.randn(d)
    return {**out, **_timm_embeddings(sd, kind)}


def _timm_embeddings(sd: dict, kind: str) -> dict[str, torch.Tensor]:
    if kind == "dinov2":
        pos = sd["embeddings.position_embeddings"]  # (1, 1 + g*g, d)
        return {"cls_token": sd["embeddings.cls_token"] + pos[:, :1], "reg_token": sd["embeddings.register_tokens"],
                "pos_embed": pos[:, 1:].clone(), "patch_embed.proj.weight": sd["embeddings.patch_embeddings.projection.weight"],
                "patch_embed.proj.bias": sd["embeddings.patch_embeddings.projection.bias"]}
    d = sd["embeddings.position_embedding.weight"].shape[1]
    return {"pos_embed": sd["embeddings.position_embedding.weight"][None].clone(),
            "patch_embed.proj.weight": sd["embeddings.patch_embedding.weight"],
            "patch_embed.proj.bias": sd["embeddings.patch_embedding.bias"],
            "attn_pool.latent": torch.randn(1, 1, d), "attn_pool.q.weight": torch.randn(d, d)}


def write_towers(model: MultimodalModel, root: Path) -> tuple[Path, Path]:
    """DINOv2 as timm's model.safetensors; SigLIP as open_clip's open_clip_pytorch_model.bin (text side too)."""
    dino, siglip = root / "dinov2", root / "siglip"
    dino.mkdir(parents=True)
    siglip.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in _timm_tower(model.vision.towers[0], "dinov2", 2).items()},
              str(dino / "model.safetensors"))
    trunk = {f"visual.trunk.{k}": v for k, v in _timm_tower(model.vision.towers[1], "siglip", 2).items()}
    torch.save({**trunk, "text.token_embedding.weight": torch.randn(10, 8), "logit_scale": torch.ones(())},
               siglip / "open_clip_pytorch_model.bin")
    return dino, siglip


def _section(state: dict, prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def write_run(model: MultimodalModel, root: Path, peer: str, drop: str | None = None) -> Path:
    """A run directory in Cobra's or ML-Mamba's layout (``drop``: a qmamba key to leave out)."""
    state = {k: v for k, v in model.state_dict().items() if k != drop}
    if peer == "cobra":
        modules = {"projector": _section(state, "connector."),
                   "llm_backbone": {f"llm.{k}": v for k, v in _section(state, "llm.").items()}}
        meta = {"model_id": "cobra+3b", "llm_backbone_id": "mamba-2.8b-zephyr",
                "arch_specifier": "no-align+fused-gelu-mlp"}
    else:
        modules = {name: _section(state, f"connector.{name}.") for name in ("mlp", "bidirectional_mamba", "projector")}
        modules["llm_backbone"] = _section(state, "llm.")
        meta = {"model_id": "mlmamba+3b", "llm_backbone_id": "mamba2-2.7b",
                "arch_specifier": "no-align+fused-gelu-mlp"}
    run = root / f"{peer}-run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"model": {**meta, "vision_backbone_id": f"dinosiglip-vit-so-{SIZE}px",
                                                           "image_resize_strategy": "resize-naive"}}))
    torch.save({"model": modules}, run / "checkpoints" / "latest-checkpoint.pt")
    return run


def inputs(model: MultimodalModel) -> tuple[torch.Tensor, torch.Tensor]:
    """Two prompts with the image placeholder first (the peers' layout) and their pixels."""
    from qmamba.constants import IMAGE_TOKEN_ID

    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 30, (2, 7), generator=g)
    ids[:, 0] = IMAGE_TOKEN_ID
    pixels = torch.randn(2, 6, SIZE, SIZE, generator=g)
    return ids, pixels
