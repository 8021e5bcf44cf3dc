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
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from qmamba.errors import ConfigError, InputError
from qmamba.models.image_config import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    RESAMPLE,
    RESIZE_STRATEGIES,
    SIGLIP_MEAN,
    SIGLIP_STD,
    ImageTransformConfig,
)
from qmamba.utils.config import config_to_dict

# the settings (ImageTransformConfig, the constants) live in qmamba.models.image_config, where a vision config
# stores them; they are exported here beside the preprocessing that follows them
__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "OPENAI_CLIP_MEAN", "OPENAI_CLIP_STD", "RESAMPLE", "RESIZE_STRATEGIES",
           "SIGLIP_MEAN", "SIGLIP_STD", "ImageTransformConfig", "MultiImageTransform", "letterbox_pad", "load_image",
           "preprocess", "shortest_edge_size", "to_rgb"]

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
