"""One vision tower's preprocessing settings (``ImageTransformConfig``), as a vision config stores them, and
how they are read from a transformers ``preprocessor_config.json``. The preprocessing itself (PIL + numpy)
is ``qmamba.data.image``; the settings live here so that the vision config needs nothing from ``qmamba.data``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from qmamba.errors import ConfigError
from qmamba.utils.config import read_json

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
