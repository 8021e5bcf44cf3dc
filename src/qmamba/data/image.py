"""Images in, pixel tensors out: loading with clear errors, and the preprocessing of the vision towers.

    load_image(path) -> PIL RGB image
    preprocess(images, cfg) -> (b, 3, S, S) float32        one tower's transform
    MultiImageTransform(cfgs)(images) -> (b, 3k, S, S)     k towers (Cobra's DINOv2 + SigLIP), channels concatenated

Resize strategies (S = ``image_size``):
    resize-naive  resize to S x S, ignoring the aspect ratio (SigLIP's own processor; Cobra's default)
    letterbox     pad to a square with the mean colour, then resize to S x S (prismatic's rule, below)
    resize-crop   resize the shortest side to ``resize_size`` (default S), keeping the aspect, then crop S x S
                  from the centre (CLIP's and DINOv2's own processors)

Every step is PIL + numpy in the order transformers' slow (PIL) processors use, so a checkpoint's
``preprocessor_config.json`` gives the same floats here as there: PIL resize with the same filter, crop
offsets ``(h - S) // 2``, rescale in float64 then cast to float32, normalise in float32.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from qmamba.errors import ConfigError, InputError
from qmamba.utils.config import config_to_dict, read_json

RESIZE_STRATEGIES = ("resize-naive", "letterbox", "resize-crop")
RESAMPLE = {"nearest": Image.Resampling.NEAREST, "lanczos": Image.Resampling.LANCZOS,
            "bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
            "box": Image.Resampling.BOX, "hamming": Image.Resampling.HAMMING}
_RESAMPLE_NAMES = {int(code): name for name, code in RESAMPLE.items()}

SIGLIP_MEAN = SIGLIP_STD = (0.5, 0.5, 0.5)
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ------------------------------------------------------------------------------------------- loading
def load_image(path: str | Path) -> Image.Image:
    """Open an image file as RGB; a missing, unreadable or corrupt file raises one ``InputError`` naming it."""
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(f"image {path}: the file does not exist")
    if path.is_dir():
        raise InputError(f"image {path}: is a directory; pass an image file (JPEG, PNG, WebP, ...)")
    try:
        with Image.open(path) as image:  # verify() checks structure and checksums without decoding
            image.verify()
        with Image.open(path) as image:  # load() decodes every pixel: catches truncated files
            image.load()
            return to_rgb(image)
    except Image.DecompressionBombError as e:
        raise InputError(f"image {path}: {e}; if you trust the file, raise PIL.Image.MAX_IMAGE_PIXELS") from None
    except Image.UnidentifiedImageError:
        raise InputError(f"image {path}: not an image file PIL can read (is it really an image?)") from None
    except Exception as e:  # PIL reports corrupt data as OSError, SyntaxError, struct.error, EOFError, ...
        raise InputError(f"image {path}: corrupt or truncated image ({type(e).__name__}: {e})") from None


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB copy of ``image``; transparency is composited onto white, as transformers' processors do."""
    if image.mode == "RGB":
        return image
    if "A" in image.getbands() or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


# -------------------------------------------------------------------------------------------- config
@dataclass
class ImageTransformConfig:
    """One vision tower's preprocessing. ``resize_size``: shortest side before the centre crop
    (resize-crop only; None means ``image_size``, i.e. no cropping of a square image)."""

    image_size: int
    resize_strategy: str = "resize-naive"
    mean: tuple[float, float, float] = SIGLIP_MEAN
    std: tuple[float, float, float] = SIGLIP_STD
    resample: str = "bicubic"
    rescale_factor: float = 1 / 255
    resize_size: int | None = None

    def __post_init__(self):
        if not isinstance(self.image_size, int) or self.image_size <= 0:
            raise ConfigError(f"image transform: image_size={self.image_size!r}; expected a positive int")
        if self.resize_strategy not in RESIZE_STRATEGIES:
            raise ConfigError(f"image transform: resize_strategy={self.resize_strategy!r}; "
                              f"expected one of {', '.join(RESIZE_STRATEGIES)}")
        if self.resample not in RESAMPLE:
            raise ConfigError(f"image transform: resample={self.resample!r}; expected one of {', '.join(RESAMPLE)}")
        self.mean, self.std = _three("mean", self.mean), _three("std", self.std)
        if min(self.std) <= 0:
            raise ConfigError(f"image transform: std={self.std} must be positive")
        if self.resize_size is not None and self.resize_size < self.image_size:
            raise ConfigError(f"image transform: resize_size={self.resize_size} is smaller than the crop "
                              f"image_size={self.image_size}; use resize_size >= image_size or null")

    @property
    def fill(self) -> tuple[int, int, int]:
        """Letterbox padding colour: the mean in 0..255, truncated (prismatic's rule)."""
        return tuple(int(x * 255) for x in self.mean)

    @classmethod
    def from_hf_preprocessor(cls, source: dict | str | Path, image_size: int | None = None) -> ImageTransformConfig:
        """From a transformers ``preprocessor_config.json`` (a dict, the file, or its directory).

        SigLIP (square resize) gives resize-naive; CLIP / BiT-DINOv2 (shortest edge + centre crop) give
        resize-crop. ``image_size`` overrides the square size (Cobra runs DINOv2 at 384); a size different
        from the checkpoint's drops its resize/crop ratio, as prismatic does.
        """
        data, where = _read_preprocessor(source)
        native = _hf_geometry(data, where)
        if image_size is not None and image_size != native["image_size"]:
            native = {**native, "image_size": image_size, "resize_size": None}
        defaults = _hf_defaults(data)
        resample = data.get("resample", 3)
        do_norm = data.get("do_normalize", True)
        try:
            return cls(
                resample=_RESAMPLE_NAMES.get(resample, resample) if isinstance(resample, int) else resample,
                mean=data.get("image_mean", defaults[0]) if do_norm else (0.0, 0.0, 0.0),
                std=data.get("image_std", defaults[1]) if do_norm else (1.0, 1.0, 1.0),
                rescale_factor=data.get("rescale_factor", 1 / 255) if data.get("do_rescale", True) else 1.0,
                **native,
            )
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None


def _three(name: str, value: Any) -> tuple[float, float, float]:
    values = [value] * 3 if isinstance(value, (int, float)) else list(value)
    if len(values) != 3:
        raise ConfigError(f"image transform: {name}={value!r}; expected 3 floats (R, G, B)")
    return tuple(float(v) for v in values)


def _read_preprocessor(source: dict | str | Path) -> tuple[dict, str]:
    if isinstance(source, dict):
        return source, "preprocessor config"
    path = Path(source).expanduser()
    if path.is_dir():
        path = path / "preprocessor_config.json"
    return read_json(path, "image preprocessor config"), str(path)


def _hf_defaults(data: dict) -> tuple[tuple, tuple]:
    """The processor class's own mean/std, used when the JSON leaves them out."""
    kind = str(data.get("image_processor_type") or data.get("feature_extractor_type") or "")
    return (SIGLIP_MEAN, SIGLIP_STD) if kind.startswith("Siglip") else (OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)


def _hf_geometry(data: dict, where: str) -> dict:
    """image_size / resize_strategy / resize_size from transformers' size, crop_size, do_center_crop."""
    kind = str(data.get("image_processor_type") or data.get("feature_extractor_type") or "")
    size = data.get("size", {"height": 224, "width": 224} if kind.startswith("Siglip") else {"shortest_edge": 224})
    if isinstance(size, int):  # old configs: an int is the shortest edge (transformers' default_to_square=False)
        size = {"shortest_edge": size}
    crop = data.get("crop_size", 224) if data.get("do_center_crop", not kind.startswith("Siglip")) else None
    if isinstance(crop, dict):
        crop = _square(crop, "crop_size", where)
    if not data.get("do_resize", True):
        raise ConfigError(f"{where}: do_resize is false; qmamba needs a fixed square input (set do_resize true)")
    if "shortest_edge" in size and "longest_edge" not in size:
        if crop is None:
            raise ConfigError(f"{where}: size {size} without a centre crop gives non-square images; "
                              f"set do_center_crop and crop_size, or pass resize_strategy")
        edge = int(size["shortest_edge"])
        return {"image_size": crop, "resize_strategy": "resize-crop", "resize_size": None if edge == crop else edge}
    if "height" in size and "width" in size:
        side = _square(size, "size", where)
        if crop is not None and crop != side:
            raise ConfigError(f"{where}: resizing to {side}x{side} then cropping {crop} is not supported; "
                              f"use a shortest_edge size with the crop, or no crop")
        return {"image_size": side, "resize_strategy": "resize-naive", "resize_size": None}
    raise ConfigError(f"{where}: size {size} is not supported; expected {{'height', 'width'}} or {{'shortest_edge'}}")


def _square(size: dict, field: str, where: str) -> int:
    if int(size["height"]) != int(size["width"]):
        raise ConfigError(f"{where}: {field} {size} is not square; qmamba's vision towers take S x S images")
    return int(size["height"])


# ------------------------------------------------------------------------------------- preprocessing
def preprocess(images: Image.Image | Sequence[Image.Image], cfg: ImageTransformConfig) -> Tensor:
    """PIL images -> normalised pixels (b, 3, S, S) float32, by ``cfg``'s resize strategy."""
    if isinstance(images, Image.Image):
        images = [images]
    if len(images) == 0:
        raise InputError("preprocess: no images given")
    bad = [type(im).__name__ for im in images if not isinstance(im, Image.Image)]
    if bad:
        raise InputError(f"preprocess: expected PIL images, got {', '.join(bad)}; open files with load_image(path)")
    arrays = [_normalise(np.asarray(_geometry(to_rgb(im), cfg)), cfg) for im in images]  # each (3, S, S)
    return torch.from_numpy(np.stack(arrays))  # (b, 3, S, S)


def _geometry(image: Image.Image, cfg: ImageTransformConfig) -> Image.Image:
    """The S x S RGB image the strategy makes of ``image``."""
    s, resample = cfg.image_size, RESAMPLE[cfg.resample]
    if cfg.resize_strategy == "resize-naive":
        return image.resize((s, s), resample=resample)
    if cfg.resize_strategy == "letterbox":
        return _resize_crop(letterbox_pad(image, cfg.fill), s, s, resample)
    return _resize_crop(image, cfg.resize_size or s, s, resample)


def letterbox_pad(image: Image.Image, fill: tuple[int, int, int]) -> Image.Image:
    """Pad to (nearly) a square, prismatic's rule: ``(max_wh - w) // 2`` columns on the left and on the
    right, ``(max_wh - h) // 2`` rows on the top and on the bottom (an odd difference leaves one short)."""
    w, h = image.size
    max_wh = max(w, h)
    pad_x, pad_y = (max_wh - w) // 2, (max_wh - h) // 2
    canvas = Image.new("RGB", (w + 2 * pad_x, h + 2 * pad_y), fill)
    canvas.paste(image, (pad_x, pad_y))
    return canvas


def shortest_edge_size(height: int, width: int, edge: int) -> tuple[int, int]:
    """(h, w) with the shortest side ``edge`` and the aspect kept, the long side truncated (as transformers)."""
    short, long = min(height, width), max(height, width)
    new_long = int(edge * long / short)
    return (new_long, edge) if width <= height else (edge, new_long)


def _resize_crop(image: Image.Image, edge: int, crop: int, resample: int) -> Image.Image:
    """Resize the shortest side to ``edge`` (aspect kept), then crop ``crop`` x ``crop`` from the centre."""
    h, w = shortest_edge_size(image.height, image.width, edge)
    image = image.resize((w, h), resample=resample)
    top, left = (h - crop) // 2, (w - crop) // 2
    return image.crop((left, top, left + crop, top + crop))


def _normalise(pixels: np.ndarray, cfg: ImageTransformConfig) -> np.ndarray:
    """(S, S, 3) uint8 -> (3, S, S) float32: rescale in float64, then (x - mean) / std in float32."""
    x = (pixels.astype(np.float64) * cfg.rescale_factor).astype(np.float32).transpose(2, 0, 1)  # (3, S, S)
    mean = np.asarray(cfg.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(cfg.std, dtype=np.float32)[:, None, None]
    return np.ascontiguousarray((x - mean) / std)


class MultiImageTransform:
    """The transforms of k towers of one encoder; their outputs are concatenated on channels (3k).

    One tower (SigLIP, CLIP, DINOv2): k = 1. Cobra's fused encoder: DINOv2 first, then SigLIP.
    """

    def __init__(self, configs: Sequence[ImageTransformConfig | dict]):
        self.configs = [c if isinstance(c, ImageTransformConfig) else ImageTransformConfig(**c) for c in configs]
        if not self.configs:
            raise ConfigError("MultiImageTransform: no transforms given")
        sizes = [c.image_size for c in self.configs]
        if len(set(sizes)) != 1:
            raise ConfigError(f"MultiImageTransform: the towers' image sizes differ ({sizes}); "
                              f"every tower of a fused encoder must see the same S x S image")

    @property
    def image_size(self) -> int:
        return self.configs[0].image_size

    @property
    def num_channels(self) -> int:
        return 3 * len(self.configs)

    def __call__(self, images: Image.Image | Sequence[Image.Image]) -> Tensor:
        """PIL images -> (b, 3k, S, S) float32."""
        return torch.cat([preprocess(images, cfg) for cfg in self.configs], dim=1)  # (b, 3k, S, S)

    def __repr__(self) -> str:
        inner = ", ".join(f"{c.resize_strategy}@{c.image_size}" for c in self.configs)
        return f"MultiImageTransform({inner})"

    def to_dicts(self) -> list[dict]:
        """JSON-ready dicts, as ``VisionConfig.transforms`` stores them."""
        return [config_to_dict(c) for c in self.configs]
