"""timm / open_clip ViT weights -> the transformers towers ``VisionEncoder`` runs (DINOv2 with registers, SigLIP).

timm fuses the attention input projection (``attn.qkv``: [q; k; v] stacked on rows, (3d, d)) and keeps the
position table of the patches only (DINOv2 with registers: ``no_embed_class``, the CLS token gets no position;
SigLIP: no CLS token at all). transformers splits q, k, v and keeps a CLS slot in DINOv2's table, so:

    blocks.{i}.attn.qkv.weight (3d, d) -> q_proj / k_proj / v_proj (d, d) each
    pos_embed (1, g*g, d)             -> DINOv2: [0; pos] (1, 1 + G*G, d)   SigLIP: (G*G, d)

where G is the grid at the run's image size: timm resamples the table once, when the peer builds its tower at
that size (bicubic, antialiased, in float32), and ``resample_positions`` does the same here, so transformers
never interpolates at run time. Blocks past the feature layer, the final norm and SigLIP's attention-pooling
head (``attn_pool.*``) are read and dropped: the features come from a block's output, before any of them.

A conversion is a set of rules; a key no rule takes, or a tensor the tower needs and the file lacks, ends the
conversion with one error that names the file, the keys and the fix.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from qmamba.convert.pickled import load_tensors_only
from qmamba.errors import CheckpointError

WEIGHT_FILES = ("model.safetensors", "open_clip_model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")
OPEN_CLIP_PREFIX = "visual.trunk."  # open_clip wraps the timm tower; everything else in its file is the text side

# timm block sub-key -> transformers sub-key (qkv is split separately)
_BLOCK = {
    "dinov2": {"norm1": "norm1", "attn.proj": "attention.o_proj", "ls1.gamma": "layer_scale1.lambda1",
               "norm2": "norm2", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2", "ls2.gamma": "layer_scale2.lambda1"},
    "siglip": {"norm1": "layer_norm1", "attn.proj": "self_attn.out_proj", "norm2": "layer_norm2",
               "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"},
}
_LAYERS = {"dinov2": "encoder.layer", "siglip": "encoder.layers"}
_QKV = {"dinov2": "attention", "siglip": "self_attn"}
_DROPPED = {"dinov2": ("norm.", "head.", "fc_norm."), "siglip": ("norm.", "attn_pool.", "head.", "fc_norm.")}
_BLOCK_KEY = re.compile(r"blocks\.(\d+)\.(.+)\.(weight|bias|gamma)$")


def find_timm_weights(path: str | Path, what: str) -> Path:
    """The weights file of a timm / open_clip tower: ``path`` itself, or one of ``WEIGHT_FILES`` inside it."""
    path = Path(path).expanduser()
    if path.is_file():
        return path
    for name in WEIGHT_FILES:
        if (path / name).is_file():
            return path / name
    raise CheckpointError(f"{what}: no weights at {path}; give the file, or a directory holding one of "
                          f"{', '.join(WEIGHT_FILES)} (the files timm and open_clip publish)")


def read_timm_state(file: Path, what: str) -> dict[str, Tensor]:
    """All tensors of a timm or open_clip file, under timm's names (open_clip's tower prefix removed)."""
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(file), device="cpu")
    else:
        state = load_tensors_only(file, what)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{what}: {file} does not hold a flat dict of tensors")
    if any(k.startswith(OPEN_CLIP_PREFIX) for k in state):
        state = {k.removeprefix(OPEN_CLIP_PREFIX): v for k, v in state.items() if k.startswith(OPEN_CLIP_PREFIX)}
    return state


def resample_positions(pos: Tensor, grid: int) -> Tensor:
    """(1, g*g, d) -> (1, grid*grid, d): bicubic, antialiased, in float32 (timm's resampling); same dtype out."""
    g = math.isqrt(pos.shape[1])
    if g == grid:
        return pos
    table = pos.reshape(1, g, g, -1).permute(0, 3, 1, 2).float()  # (1, d, g, g)
    table = F.interpolate(table, size=(grid, grid), mode="bicubic", align_corners=False, antialias=True)
    return table.permute(0, 2, 3, 1).reshape(1, grid * grid, -1).to(pos.dtype)  # (1, grid*grid, d)


def timm_to_tower(state: dict[str, Tensor], kind: str, keep_blocks: int, grid: int,
                  where: str) -> tuple[dict[str, Tensor], list[str]]:
    """timm names -> a transformers tower's names (``kind`` 'dinov2' or 'siglip'), blocks 0..keep_blocks-1 only.

    Returns the renamed tensors and the keys no rule takes (the caller reports them with the missing ones).
    """
    out: dict[str, Tensor] = {}
    unknown: list[str] = []
    for key, value in state.items():
        m = _BLOCK_KEY.match(key)
        if m:
            i, sub, leaf = int(m.group(1)), m.group(2), m.group(3)
            if i >= keep_blocks:
                continue  # past the feature layer
            prefix = f"{_LAYERS[kind]}.{i}."
            if sub == "attn.qkv":
                for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                    out[f"{prefix}{_QKV[kind]}.{name}.{leaf}"] = part.contiguous()
            elif f"{sub}.{leaf}" in _BLOCK[kind]:  # layer scales: timm's whole name is the rule
                out[prefix + _BLOCK[kind][f"{sub}.{leaf}"]] = value
            elif sub in _BLOCK[kind]:
                out[f"{prefix}{_BLOCK[kind][sub]}.{leaf}"] = value
            else:
                unknown.append(key)
        elif key.startswith(_DROPPED[kind]):
            continue
        elif not _embedding(kind, key, value, grid, out):
            unknown.append(key)
    return out, unknown


def _embedding(kind: str, key: str, value: Tensor, grid: int, out: dict[str, Tensor]) -> bool:
    """Rename one embedding tensor into ``out``; False when ``key`` is not one."""
    if key.startswith("patch_embed.proj."):
        name = "patch_embeddings.projection" if kind == "dinov2" else "patch_embedding"
        out[f"embeddings.{name}.{key.rsplit('.', 1)[1]}"] = value
    elif key == "pos_embed":
        out.update(_positions(kind, value, grid))
    elif kind == "dinov2" and key == "cls_token":
        out["embeddings.cls_token"] = value
    elif kind == "dinov2" and key == "reg_token":
        out["embeddings.register_tokens"] = value
    else:
        return False
    return True


def _positions(kind: str, pos: Tensor, grid: int) -> dict[str, Tensor]:
    """timm's position table (with or without a CLS slot) at the run's grid, in transformers' layout."""
    n = pos.shape[1]
    cls_slot = math.isqrt(n) ** 2 != n and math.isqrt(n - 1) ** 2 == n - 1
    cls_pos = pos[:, :1] if cls_slot else torch.zeros_like(pos[:, :1])  # (1, 1, d); no_embed_class: none
    patches = resample_positions(pos[:, 1:] if cls_slot else pos, grid)  # (1, grid*grid, d)
    if kind == "dinov2":
        return {"embeddings.position_embeddings": torch.cat([cls_pos, patches], dim=1)}  # (1, 1 + G*G, d)
    return {"embeddings.position_embedding.weight": patches[0]}  # (G*G, d)


def unknown_keys_error(file: Path, unknown: list[str], missing: list[str], fix: str) -> CheckpointError:
    """One error naming the file, every key no rule takes and every tensor the model lacks."""
    parts = []
    if unknown:
        parts.append(f"keys no rule converts: {_names(unknown)}")
    if missing:
        parts.append(f"tensors the model needs that the file lacks: {_names(missing)}")
    return CheckpointError(f"{file}: " + "; ".join(parts) + f". Fix: {fix}")


def _names(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")
