"""Vision encoders: SigLIP, CLIP, DINOv2 (with or without registers) and Cobra's fused DINOv2 + SigLIP.

    pixel_values (b, 3k, S, S) -> towers -> patch features (b, p, d_vision)

Each tower is a transformers vision model cut at ``feature_layer``: the output of layer ``feature_layer``
of ``hidden_states`` (index 0 is the embeddings; -2, the default, is the second-to-last layer, as LLaVA
and Cobra use), before any final norm. The layers past it, the final norm and SigLIP's pooling head are
never built, so they cost no memory or time. CLS and register tokens are dropped: patches only, in raster
order. A fused encoder concatenates its towers' features on channels (DINOv2 first, then SigLIP).

Weights load from local transformers checkpoint directories (``from_pretrained``) or, inside a combined
checkpoint, from this module's own ``state_dict()`` (keys ``towers.{i}.model.*``) rebuilt from ``VisionConfig``.

The pixels come from the preprocessing in ``qmamba.data``: ``MultiImageTransform(config.transforms)(images)``;
the settings it follows (``ImageTransformConfig``) are part of the config, in ``models.image_config``.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import json
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from qmamba.errors import CheckpointError, ConfigError, InputError
from qmamba.models import checkpoints as ckpt
from qmamba.models.image_config import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    SIGLIP_MEAN,
    SIGLIP_STD,
    ImageTransformConfig,
)
from qmamba.utils.config import config_to_dict, read_json

KINDS = ("siglip", "clip", "dinov2", "dinosiglip")


@dataclass(frozen=True)
class _Family:
    """How qmamba drives one transformers vision model class."""

    kind: str
    config_cls: str
    model_cls: str
    final_norm: str  # attribute replaced by Identity: it only ever acts on the last layer
    has_cls: bool  # a CLS token precedes the patches
    pos_flag: bool  # forward takes interpolate_pos_encoding (DINOv2 always interpolates)


FAMILIES = {
    "siglip_vision_model": _Family("siglip", "SiglipVisionConfig", "SiglipVisionModel", "post_layernorm", False, True),
    "clip_vision_model": _Family("clip", "CLIPVisionConfig", "CLIPVisionModel", "post_layernorm", True, True),
    "dinov2": _Family("dinov2", "Dinov2Config", "Dinov2Model", "layernorm", True, False),
    "dinov2_with_registers": _Family("dinov2", "Dinov2WithRegistersConfig", "Dinov2WithRegistersModel",
                                     "layernorm", True, False),
}
_FULL_MODELS = {"siglip": "siglip_vision_model", "clip": "clip_vision_model"}  # image-text models: vision_config
_CONFIG_NOISE = ("transformers_version", "architectures", "_name_or_path", "dtype", "torch_dtype", "id2label",
                 "label2id", "stage_names", "out_features", "out_indices")
_NOT_VISION = ("text_model.", "logit_scale", "logit_bias", "visual_projection.", "text_projection.")


def _hf(name: str):
    return getattr(importlib.import_module("transformers"), name)


def _family(model_type: str, where: str) -> _Family:
    if model_type not in FAMILIES:
        raise ConfigError(f"{where}: model_type {model_type!r} is not a vision tower qmamba knows; "
                          f"expected one of {', '.join(FAMILIES)}")
    return FAMILIES[model_type]


def hf_vision_config(data: dict, where: str = "vision tower"):
    """A transformers vision config object from a stored dict (which names its ``model_type``)."""
    family = _family(data.get("model_type"), where)
    return _hf(family.config_cls).from_dict({k: v for k, v in data.items() if k != "model_type"})


def _facts(hf_config: dict) -> tuple[int, int]:
    """(num_hidden_layers, patch_size) of a stored tower config, transformers' defaults filling gaps."""
    return _facts_of(json.dumps(hf_config, sort_keys=True, default=str))


@functools.lru_cache(maxsize=64)
def _facts_of(hf_json: str) -> tuple[int, int]:
    # building a transformers config takes about a millisecond, and every request asks for the patch count
    cfg = hf_vision_config(json.loads(hf_json))
    return int(cfg.num_hidden_layers), int(cfg.patch_size)


def feature_index(feature_layer: int, n_layers: int, where: str = "vision") -> int:
    """``hidden_states`` index of ``feature_layer`` (n_layers + 1 states: embeddings, then each layer)."""
    index = feature_layer if feature_layer >= 0 else n_layers + 1 + feature_layer
    if not 1 <= index <= n_layers:
        raise ConfigError(f"{where}: feature_layer={feature_layer} selects no layer of a {n_layers}-layer tower; "
                          f"use 1..{n_layers} or -1..-{n_layers} (-2 is the second-to-last layer)")
    return index


# -------------------------------------------------------------------------------------------- config
@dataclass
class VisionConfig:
    """A vision encoder, JSON-ready (it is stored inside a multimodal model's config.json).

    ``hf_configs``: one transformers vision config dict per tower (dinosiglip: DINOv2 first, then SigLIP),
    with the checkpoint's own layer count and image size. ``transforms``: one ``ImageTransformConfig`` dict
    per tower. ``image_size``: the square size the towers run at (position embeddings are interpolated
    when it differs from a checkpoint's).
    """

    kind: str
    image_size: int
    feature_layer: int = -2
    hf_configs: list = field(default_factory=list)
    transforms: list = field(default_factory=list)
    frozen: bool = True

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ConfigError(f"vision: kind={self.kind!r}; expected one of {', '.join(KINDS)}")
        want = ["dinov2", "siglip"] if self.kind == "dinosiglip" else [self.kind]
        got = [_family((c or {}).get("model_type"), f"vision: hf_configs[{i}]").kind
               for i, c in enumerate(self.hf_configs)]
        if got != want:
            raise ConfigError(f"vision: kind={self.kind!r} needs towers {want}, hf_configs hold {got}")
        if len(self.transforms) != len(self.hf_configs):
            raise ConfigError(f"vision: {len(self.transforms)} transforms for {len(self.hf_configs)} towers; "
                              f"give one ImageTransformConfig per tower")
        sizes = [t.image_size for t in self.transform_configs()]  # also validates each transform
        if any(s != self.image_size for s in sizes):
            raise ConfigError(f"vision: image_size={self.image_size} but the transforms make {sizes}; "
                              f"they must agree (rebuild the transforms with image_size={self.image_size})")
        for i, hf in enumerate(self.hf_configs):
            feature_index(self.feature_layer, _facts(hf)[0], f"vision: hf_configs[{i}]")
        self._grid()

    def transform_configs(self) -> list[ImageTransformConfig]:
        try:
            return [t if isinstance(t, ImageTransformConfig) else ImageTransformConfig(**t) for t in self.transforms]
        except TypeError as e:
            raise ConfigError(f"vision: transforms: {e}") from None

    @property
    def grids(self) -> list[int]:
        """Patches per side of each tower's grid: S // patch_size."""
        return [self.image_size // _facts(hf)[1] for hf in self.hf_configs]

    @property
    def num_patches(self) -> int:
        return self._grid() ** 2

    def _grid(self) -> int:
        """Patches per side, checking that the towers of a fused encoder agree."""
        grids = self.grids
        if min(grids) < 1:
            raise ConfigError(f"vision: image_size={self.image_size} is smaller than a patch "
                              f"({[_facts(hf)[1] for hf in self.hf_configs]})")
        if len(set(grids)) != 1:
            parts = [f"{FAMILIES[hf['model_type']].kind} gives {g}x{g}={g * g} (patch {_facts(hf)[1]})"
                     for g, hf in zip(grids, self.hf_configs)]
            raise ConfigError(f"vision: at image_size={self.image_size} " + ", ".join(parts) +
                              "; a fused encoder needs the same patch grid from both towers: use towers with "
                              "the same patch size (DINOv2 and SigLIP patch 14 at 384 both give 729)")
        return grids[0]


# --------------------------------------------------------------------------------------------- tower
class VisionTower(nn.Module):
    """One transformers vision model, built only up to ``feature_layer``; returns patch tokens (b, p, d)."""

    def __init__(self, hf_config: dict, feature_layer: int, image_size: int):
        super().__init__()
        family = _family(hf_config.get("model_type"), "vision tower")
        n_layers = hf_vision_config(hf_config).num_hidden_layers
        trimmed = {**hf_config, "num_hidden_layers": feature_index(feature_layer, n_layers, f"{family.kind} tower")}
        if family.kind == "siglip":
            trimmed["vision_use_head"] = False  # the attention-pooling head acts on the last layer only
        cfg = hf_vision_config(trimmed)
        self.model = _hf(family.model_cls)(cfg)
        setattr(self.model, family.final_norm, nn.Identity())
        self.family = family
        self.n_prefix = int(family.has_cls) + int(getattr(cfg, "num_register_tokens", 0) or 0)  # CLS + registers
        self.interpolate = family.pos_flag and image_size != cfg.image_size
        self.d = cfg.hidden_size
        unknown = {k for k in _non_persistent_buffers(self.model) if not k.endswith("position_ids")}
        if unknown:
            raise ConfigError(f"vision tower {family.kind}: transformers made buffers qmamba cannot restore after "
                              f"a meta-device build: {sorted(unknown)}")
        self.model.register_load_state_dict_post_hook(_restore_position_ids)

    def forward(self, pixel_values: Tensor) -> Tensor:
        kwargs = {"interpolate_pos_encoding": True} if self.interpolate else {}
        hidden = self.model(pixel_values=pixel_values, **kwargs).last_hidden_state  # (b, n_prefix + p, d)
        return hidden[:, self.n_prefix:]  # (b, p, d)


def _non_persistent_buffers(model: nn.Module) -> set[str]:
    return {name for name, _ in model.named_buffers()} - set(model.state_dict())


def _restore_position_ids(model: nn.Module, incompatible_keys=None) -> None:
    """Refill ``position_ids`` (arange, not saved in checkpoints) after a meta-device build + ``to_empty``."""
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith("position_ids") and buf.device.type != "meta":
                buf.copy_(torch.arange(buf.shape[-1], device=buf.device).expand_as(buf))


# ------------------------------------------------------------------------------------------- encoder
class VisionEncoder(nn.Module):
    """Frozen-by-default vision encoder: (b, 3k, S, S) pixels -> (b, p, d_vision) patch features."""

    def __init__(self, config: VisionConfig, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None):
        super().__init__()
        self.config = config
        with torch.device(device) if device is not None else nullcontext():
            self.towers = nn.ModuleList(VisionTower(hf, config.feature_layer, config.image_size)
                                        for hf in config.hf_configs)
        if dtype is not None:
            self.to(dtype)
        self.set_frozen(config.frozen)

    # ---------------------------------------------------------------- shape facts
    @property
    def num_patches(self) -> int:
        return self.config.num_patches

    @property
    def grid(self) -> tuple[int, int]:
        """(rows, cols) of the patch grid; features are in raster order over it."""
        g = self.config._grid()
        return g, g

    @property
    def d_vision(self) -> int:
        return sum(t.d for t in self.towers)

    # ---------------------------------------------------------------- freezing
    @property
    def frozen(self) -> bool:
        """True when no parameter trains: forward then runs under no_grad and the module stays in eval mode."""
        return not any(p.requires_grad for p in self.parameters())

    def set_frozen(self, frozen: bool) -> VisionEncoder:
        self.requires_grad_(not frozen)
        self.config.frozen = frozen
        return self.train(self.training and not frozen)

    def train(self, mode: bool = True) -> VisionEncoder:
        """A frozen encoder stays in eval mode whatever its parent asks."""
        return super().train(mode and not self.frozen)

    # ---------------------------------------------------------------- forward
    def forward(self, pixel_values: Tensor) -> Tensor:
        """(b, 3k, S, S) -> (b, p, d_vision)."""
        self._check_pixels(pixel_values)
        with torch.no_grad() if self.frozen else nullcontext():
            chunks = pixel_values.split(3, dim=1)  # k x (b, 3, S, S)
            feats = [tower(x.to(_dtype_of(tower))) for tower, x in zip(self.towers, chunks)]  # k x (b, p, d_i)
        return feats[0] if len(feats) == 1 else torch.cat(feats, dim=-1)  # (b, p, d_vision)

    def _check_pixels(self, pixel_values: Tensor) -> None:
        s, k = self.config.image_size, len(self.towers)
        if pixel_values.dim() != 4 or pixel_values.shape[1:] != (3 * k, s, s):
            raise InputError(f"vision ({self.config.kind}): pixel_values have shape {tuple(pixel_values.shape)}, "
                             f"expected (b, {3 * k}, {s}, {s}); make them with "
                             f"qmamba.data.MultiImageTransform(encoder.config.transforms)(images)")

    # ---------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(cls, paths: str | Path | Sequence[str | Path], kind: str | None = None,
                        image_size: int | None = None, feature_layer: int = -2, resize_strategy: str | None = None,
                        frozen: bool = True) -> VisionEncoder:
        """Load from local transformers checkpoint directories (dinosiglip: [dinov2_dir, siglip_dir]).

        Each directory holds config.json (SiglipModel/SiglipVisionModel, CLIPModel/CLIPVisionModel,
        Dinov2Model/Dinov2WithRegistersModel), the weights and preprocessor_config.json. ``image_size``
        defaults to the preprocessor's (dinosiglip: SigLIP's); ``resize_strategy`` overrides the
        preprocessor's own.
        """
        dirs = [paths] if isinstance(paths, (str, Path)) else list(paths)
        sources = [_read_source(d) for d in dirs]
        kind = _resolve_kind(kind, sources)
        native = [ImageTransformConfig.from_hf_preprocessor(s.dir) for s in sources]
        size = image_size or native[-1].image_size  # dinosiglip: DINOv2 runs at SigLIP's size
        transforms = [ImageTransformConfig.from_hf_preprocessor(s.dir, size) for s in sources]
        if resize_strategy is not None:
            transforms = [dataclasses.replace(t, resize_strategy=resize_strategy) for t in transforms]
        config = VisionConfig(kind=kind, image_size=size, feature_layer=feature_layer,
                              hf_configs=[s.hf_config for s in sources],
                              transforms=[config_to_dict(t) for t in transforms], frozen=frozen)
        with torch.device("meta"):  # no random init: every weight comes from the checkpoints
            encoder = cls(config)
        encoder.to_empty(device="cpu")
        for tower, source in zip(encoder.towers, sources):
            _load_tower(tower, source)
        return encoder.set_frozen(frozen)


def _dtype_of(module: nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


# ------------------------------------------------------------------------------ checkpoint directories
@dataclass
class _Source:
    dir: Path
    hf_config: dict  # the vision tower's config, cleaned
    full: bool  # an image-text checkpoint (CLIPModel, SiglipModel): text weights are skipped


def _read_source(path: str | Path) -> _Source:
    """Read a tower directory's config.json; a model of another family raises ``CheckpointError``."""
    path = ckpt.require_dir(path, "VisionEncoder.from_pretrained")
    file = path / "config.json"
    data = read_json(file, "vision tower config")
    model_type = data.get("model_type")
    full = model_type in _FULL_MODELS
    if full:
        data = dict(data.get("vision_config") or data.get("vision_config_dict") or {})
        model_type = _FULL_MODELS[model_type]
    elif model_type not in FAMILIES:
        known = ", ".join([*_FULL_MODELS, *FAMILIES])
        raise CheckpointError(f"{file}: model_type {model_type!r} is not a vision encoder qmamba can load; "
                              f"expected one of {known} (a SigLIP, CLIP or DINOv2 checkpoint directory)")
    hf = _hf(FAMILIES[model_type].config_cls).from_dict({k: v for k, v in data.items() if k != "model_type"})
    clean = {k: v for k, v in hf.to_diff_dict().items() if k not in _CONFIG_NOISE}
    return _Source(path, {**clean, "model_type": model_type}, full)


def _resolve_kind(kind: str | None, sources: list[_Source]) -> str:
    found = [FAMILIES[s.hf_config["model_type"]].kind for s in sources]
    if len(found) == 1:
        detected = found[0]
    elif found == ["dinov2", "siglip"]:
        detected = "dinosiglip"
    else:
        raise ConfigError(f"VisionEncoder.from_pretrained: directories {[str(s.dir) for s in sources]} hold "
                          f"{found}; give one directory, or two for dinosiglip in the order [dinov2, siglip]")
    if kind is not None and kind != detected:
        raise ConfigError(f"VisionEncoder.from_pretrained: kind={kind!r} but the directories hold a "
                          f"{detected} encoder; drop kind= or pass the right directories")
    return detected


def _load_tower(tower: VisionTower, source: _Source) -> None:
    """Strictly load a checkpoint into a tower; the layers past feature_layer, the final norm and pooling
    head are the only checkpoint tensors it may skip."""
    where = f"vision tower weights in {source.dir}"
    state = _vision_keys(ckpt.load_state_dict(source.dir, where), source)
    with torch.device("meta"):
        full = _hf(tower.family.model_cls)(hf_vision_config(source.hf_config))
    unused = set(full.state_dict()) - set(tower.model.state_dict())
    ckpt.load_into(tower.model, {k: v for k, v in state.items() if k not in unused}, where)


def _vision_keys(state: dict[str, Tensor], source: _Source) -> dict[str, Tensor]:
    """Checkpoint names -> this transformers version's names: drop an image-text model's text side and
    the ``vision_model.`` prefix (CLIP/SigLIP), rename DINOv2's older attention and SwiGLU names."""
    out = {}
    for key, value in state.items():
        if key.endswith("position_ids") or (source.full and key.startswith(_NOT_VISION)):
            continue
        key = key.removeprefix("vision_model.")
        if FAMILIES[source.hf_config["model_type"]].kind == "dinov2":
            out.update(_dinov2_names(key, value))
        else:
            out[key] = value
    return out


_DINOV2_RENAMES = ((".attention.attention.query.", ".attention.q_proj."),
                   (".attention.attention.key.", ".attention.k_proj."),
                   (".attention.attention.value.", ".attention.v_proj."),
                   (".attention.output.dense.", ".attention.o_proj."),
                   (".mlp.weights_out.", ".mlp.down_proj."))


def _dinov2_names(key: str, value: Tensor) -> dict[str, Tensor]:
    for old, new in _DINOV2_RENAMES:
        key = key.replace(old, new)
    if ".mlp.weights_in." in key:  # SwiGLU: one fused [gate; up] matrix
        gate, up = value.chunk(2, dim=0)
        return {key.replace(".weights_in.", ".gate_proj."): gate, key.replace(".weights_in.", ".up_proj."): up}
    return {key: value}


# ------------------------------------------------------------------------------------------- presets
def _tower(model_type: str, **fields) -> dict:
    return {"model_type": model_type, **fields}


def _transform(size: int, strategy: str, mean, std, resize_size: int | None = None) -> dict:
    return {"image_size": size, "resize_strategy": strategy, "mean": list(mean), "std": list(std),
            "resample": "bicubic", "rescale_factor": 1 / 255, "resize_size": resize_size}


def _siglip_t(size: int) -> dict:
    return _transform(size, "resize-naive", SIGLIP_MEAN, SIGLIP_STD)


def _dino_t(size: int, strategy: str = "resize-naive", resize_size: int | None = None) -> dict:
    return _transform(size, strategy, IMAGENET_MEAN, IMAGENET_STD, resize_size)


def _clip_t(size: int) -> dict:
    return _transform(size, "resize-crop", OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)


SIGLIP_SO400M = _tower("siglip_vision_model", hidden_size=1152, intermediate_size=4304, num_hidden_layers=27,
                       num_attention_heads=16, patch_size=14, image_size=384, hidden_act="gelu_pytorch_tanh",
                       layer_norm_eps=1e-6)
DINOV2_VITL14_REG4 = _tower("dinov2_with_registers", hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                            mlp_ratio=4, patch_size=14, image_size=518, num_register_tokens=4, hidden_act="gelu",
                            layer_norm_eps=1e-6, layerscale_value=1.0, qkv_bias=True, use_swiglu_ffn=False)
CLIP_VITL14_336 = _tower("clip_vision_model", hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                         num_attention_heads=16, patch_size=14, image_size=336, hidden_act="quick_gelu",
                         layer_norm_eps=1e-5, projection_dim=768)
_TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, patch_size=8)
SIGLIP_TINY = _tower("siglip_vision_model", intermediate_size=64, image_size=32, **_TINY)
# the micro-world's encoder (qmamba's shipped micro SigLIP): 64 px, patch 8 -> 8 x 8 = 64 patches of width 128
SIGLIP_MICRO = _tower("siglip_vision_model", hidden_size=128, intermediate_size=512, num_hidden_layers=4,
                      num_attention_heads=4, patch_size=8, image_size=64, layer_norm_eps=1e-6,
                      hidden_act="gelu_pytorch_tanh")
DINOV2_TINY = _tower("dinov2_with_registers", mlp_ratio=2, image_size=24, num_register_tokens=2, **_TINY)
CLIP_TINY = _tower("clip_vision_model", intermediate_size=64, image_size=32, **_TINY)


def _preset(kind: str, size: int, towers: list[dict], transforms: list[dict]) -> VisionConfig:
    return VisionConfig(kind=kind, image_size=size, hf_configs=[dict(t) for t in towers], transforms=transforms)


VISION_PRESETS = {
    # Q-Mamba, VL-Mamba: SigLIP so400m at 384 -> 27 x 27 = 729 patches of width 1152
    "siglip-so400m-patch14-384": lambda: _preset("siglip", 384, [SIGLIP_SO400M], [_siglip_t(384)]),
    # DINOv2 ViT-L/14 with 4 registers, run at 384 (its checkpoint is 518) -> 729 patches of width 1024
    "dinov2-vitl14-reg4": lambda: _preset("dinov2", 384, [DINOV2_VITL14_REG4], [_dino_t(384)]),
    # Cobra: DINOv2 + SigLIP at 384, resize-naive -> 729 patches of width 1024 + 1152 = 2176
    "dinosiglip-384": lambda: _preset("dinosiglip", 384, [DINOV2_VITL14_REG4, SIGLIP_SO400M],
                                      [_dino_t(384), _siglip_t(384)]),
    # LLaVA-1.5's tower: CLIP ViT-L/14 at 336 -> 24 x 24 = 576 patches of width 1024
    "clip-vit-l-336": lambda: _preset("clip", 336, [CLIP_VITL14_336], [_clip_t(336)]),
    # tiny towers for tests: width 32, 2 layers, patch 8, image 32 -> 16 patches (DINOv2 interpolates from 24)
    "siglip-tiny": lambda: _preset("siglip", 32, [SIGLIP_TINY], [_siglip_t(32)]),
    "siglip-micro": lambda: _preset("siglip", 64, [SIGLIP_MICRO], [_siglip_t(64)]),
    "dinov2-tiny": lambda: _preset("dinov2", 32, [DINOV2_TINY], [_dino_t(32, "resize-crop", 36)]),
    "dinosiglip-tiny": lambda: _preset("dinosiglip", 32, [DINOV2_TINY, SIGLIP_TINY], [_dino_t(32), _siglip_t(32)]),
    "clip-tiny": lambda: _preset("clip", 32, [CLIP_TINY], [_clip_t(32)]),
}


def vision_preset(name: str, resize_strategy: str | None = None, feature_layer: int | None = None,
                  frozen: bool = True) -> VisionConfig:
    """A named vision config (full-size or tiny) with optional overrides."""
    if name not in VISION_PRESETS:
        raise ConfigError(f"vision preset {name!r} is unknown; known: {', '.join(VISION_PRESETS)}")
    config = VISION_PRESETS[name]()
    if resize_strategy is not None:
        config.transforms = [{**t, "resize_strategy": resize_strategy} for t in config.transforms]
    if feature_layer is not None:
        config = VisionConfig(**{**config.__dict__, "feature_layer": feature_layer})
    config.frozen = frozen
    return config
