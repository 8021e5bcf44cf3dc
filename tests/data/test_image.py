"""Image loading and preprocessing: errors, geometry, and parity with transformers' slow (PIL) processors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from qmamba.data.image import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    ImageTransformConfig,
    MultiImageTransform,
    letterbox_pad,
    load_image,
    preprocess,
    shortest_edge_size,
)
from qmamba.errors import CheckpointError, ConfigError, InputError


def _random_image(h: int, w: int, seed: int = 0, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode)


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> str:
    d = (a.double() - b.double()).abs()
    return f"max abs {d.max():.3g}, mean abs {d.mean():.3g}"


# ------------------------------------------------------------------------------------------ load_image
def test_load_image_returns_rgb(tmp_path):
    gray = Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8))
    gray.save(tmp_path / "g.png")
    image = load_image(tmp_path / "g.png")
    assert image.mode == "RGB" and image.size == (8, 8)
    assert np.asarray(image)[0, 3].tolist() == [3, 3, 3]


def test_load_image_composites_transparency_on_white(tmp_path):
    rgba = Image.new("RGBA", (4, 4), (10, 20, 30, 0))  # fully transparent
    rgba.save(tmp_path / "t.png")
    assert np.asarray(load_image(tmp_path / "t.png"))[0, 0].tolist() == [255, 255, 255]


@pytest.mark.parametrize("case", ["missing", "directory", "corrupt", "text_as_png", "truncated"])
def test_load_image_errors_name_the_file(tmp_path, case):
    path = tmp_path / "img.png"
    if case == "directory":
        path.mkdir()
    elif case == "corrupt":  # a real PNG with bytes flipped inside its pixel data: the checksum fails
        _random_image(16, 16).save(path)
        data = bytearray(path.read_bytes())
        data[len(data) // 2: len(data) // 2 + 8] = bytes(8)
        path.write_bytes(bytes(data))
    elif case == "text_as_png":
        path.write_text("this is not an image\n")
    elif case == "truncated":
        _random_image(64, 64).save(tmp_path / "full.jpg", quality=95)
        path = tmp_path / "cut.jpg"
        path.write_bytes((tmp_path / "full.jpg").read_bytes()[:600])
    expected = {"missing": "does not exist", "directory": "is a directory", "corrupt": "corrupt or truncated",
                "text_as_png": "not an image file", "truncated": "corrupt or truncated"}[case]
    with pytest.raises(InputError) as info:
        load_image(path)
    assert str(path) in str(info.value) and expected in str(info.value)


def test_load_image_decompression_bomb(tmp_path, monkeypatch):
    _random_image(64, 64).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 4096 pixels > 2 x 100: PIL raises the bomb error
    with pytest.raises(InputError, match="MAX_IMAGE_PIXELS"):
        load_image(tmp_path / "big.png")


# -------------------------------------------------------------------------------------- hand-computed
def test_normalisation_by_hand():
    pixels = np.array([[[0, 128, 255], [10, 20, 30]], [[255, 255, 255], [1, 2, 3]]], dtype=np.uint8)  # (2, 2, 3)
    cfg = ImageTransformConfig(image_size=2, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    out = preprocess([Image.fromarray(pixels)], cfg)  # no resize: 2 x 2 stays
    mean, std = np.array(IMAGENET_MEAN), np.array(IMAGENET_STD)
    want = ((pixels / 255.0 - mean) / std).transpose(2, 0, 1)[None]  # (1, 3, 2, 2)
    assert out.dtype == torch.float32 and out.shape == (1, 3, 2, 2)
    assert np.abs(out.numpy() - want).max() < 1e-6


def test_shortest_edge_size_like_transformers():
    assert shortest_edge_size(217, 300, 80) == (80, 110)  # 80 * 300 / 217 = 110.6 -> 110
    assert shortest_edge_size(301, 199, 80) == (121, 80)
    assert shortest_edge_size(50, 50, 32) == (32, 32)


def test_resize_crop_takes_the_centre():
    # a 20 x 40 image (h x w) whose columns count 0..39; shortest edge 20 keeps it, crop 20 takes columns 10..29
    cols = np.tile(np.arange(40, dtype=np.uint8)[None, :, None], (20, 1, 3))
    cfg = ImageTransformConfig(image_size=20, resize_strategy="resize-crop", mean=(0, 0, 0), std=(1, 1, 1),
                               rescale_factor=1.0, resample="nearest")
    out = preprocess(Image.fromarray(cols), cfg)[0, 0]  # (20, 20)
    assert out[0].tolist() == list(range(10, 30))


# --------------------------------------------------------------------------------------------- letterbox
def test_letterbox_fill_and_geometry():
    red = Image.new("RGB", (40, 20), (255, 0, 0))  # w 40, h 20: 10 rows of padding on top and bottom
    padded = letterbox_pad(red, (123, 116, 103))
    assert padded.size == (40, 40)
    arr = np.asarray(padded)
    assert (arr[:10] == [123, 116, 103]).all() and (arr[30:] == [123, 116, 103]).all()
    assert (arr[10:30] == [255, 0, 0]).all()

    cfg = ImageTransformConfig(image_size=40, resize_strategy="letterbox", mean=IMAGENET_MEAN, std=IMAGENET_STD)
    assert cfg.fill == (123, 116, 103)  # int(mean * 255), prismatic's rule
    out = preprocess(red, cfg)[0]  # (3, 40, 40): already 40 x 40, the resize keeps it
    fill = (np.array([123, 116, 103]) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    red_n = (np.array([1.0, 0.0, 0.0]) - IMAGENET_MEAN) / IMAGENET_STD
    for c in range(3):
        assert torch.allclose(out[c, :10], torch.full((10, 40), fill[c], dtype=torch.float32), atol=1e-6)
        assert torch.allclose(out[c, 10:30], torch.full((20, 40), red_n[c], dtype=torch.float32), atol=1e-6)
        assert torch.allclose(out[c, 30:], torch.full((10, 40), fill[c], dtype=torch.float32), atol=1e-6)


def test_letterbox_odd_padding_and_tall_images():
    padded = letterbox_pad(Image.new("RGB", (41, 20), (0, 0, 0)), (1, 2, 3))
    assert padded.size == (41, 40)  # (41 - 20) // 2 = 10 rows on each side: one short of square
    tall = letterbox_pad(Image.new("RGB", (10, 30), (0, 0, 0)), (1, 2, 3))
    assert tall.size == (30, 30) and np.asarray(tall)[:, :10].tolist() == [[[1, 2, 3]] * 10] * 30
    # a padded image one short of square: prismatic resizes its shortest side to S and crops the centre
    image = _random_image(20, 41, 6)
    cfg = ImageTransformConfig(image_size=64, resize_strategy="letterbox", mean=(0, 0, 0), std=(1, 1, 1),
                               rescale_factor=1.0)
    want = np.asarray(letterbox_pad(image, cfg.fill).resize((65, 64), Image.Resampling.BICUBIC).crop((0, 0, 64, 64)))
    got = preprocess(image, cfg)[0].permute(1, 2, 0).numpy()  # (64, 64, 3)
    assert np.array_equal(got, want.astype(np.float32))


# ------------------------------------------------------------------------------------ transformers parity
def _hf_processors():
    from transformers import BitImageProcessorPil, CLIPImageProcessorPil, SiglipImageProcessorPil

    return [
        ("siglip", SiglipImageProcessorPil(size={"height": 48, "width": 48}, image_mean=[0.5] * 3,
                                           image_std=[0.5] * 3), "resize-naive"),
        ("clip", CLIPImageProcessorPil(size={"shortest_edge": 40}, crop_size={"height": 40, "width": 40}),
         "resize-crop"),
        ("dinov2", BitImageProcessorPil(size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224},
                                        image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD)), "resize-crop"),
    ]


@pytest.mark.parametrize("index", range(3), ids=["siglip", "clip", "dinov2"])
def test_matches_transformers_slow_processors(tmp_path, index):
    name, processor, strategy = _hf_processors()[index]
    processor.save_pretrained(tmp_path)
    cfg = ImageTransformConfig.from_hf_preprocessor(tmp_path)
    assert cfg.resize_strategy == strategy and cfg.resample == "bicubic"
    images = [_random_image(217, 300, 1), _random_image(301, 199, 2), _random_image(33, 33, 3, mode="L")]
    want = processor(images=images, return_tensors="pt")["pixel_values"]
    got = preprocess(images, cfg)
    assert got.shape == want.shape and got.dtype == torch.float32
    assert torch.allclose(got, want, atol=1e-5, rtol=0), f"{name}: {_max_diff(got, want)}"


def test_from_hf_preprocessor_fields_and_override():
    siglip = {"image_processor_type": "SiglipImageProcessor", "size": {"height": 384, "width": 384},
              "image_mean": [0.5] * 3, "image_std": [0.5] * 3, "resample": 3, "rescale_factor": 1 / 255}
    cfg = ImageTransformConfig.from_hf_preprocessor(siglip)
    assert (cfg.image_size, cfg.resize_strategy, cfg.mean, cfg.resize_size) == (384, "resize-naive", (0.5,) * 3, None)

    dino = {"image_processor_type": "BitImageProcessor", "size": {"shortest_edge": 256}, "do_center_crop": True,
            "crop_size": {"height": 224, "width": 224}, "image_mean": list(IMAGENET_MEAN),
            "image_std": list(IMAGENET_STD), "resample": 3}
    cfg = ImageTransformConfig.from_hf_preprocessor(dino)
    assert (cfg.image_size, cfg.resize_strategy, cfg.resize_size) == (224, "resize-crop", 256)
    cfg = ImageTransformConfig.from_hf_preprocessor(dino, image_size=384)  # Cobra runs DINOv2 at 384
    assert (cfg.image_size, cfg.resize_size, cfg.std) == (384, None, IMAGENET_STD)

    old_clip = {"feature_extractor_type": "CLIPFeatureExtractor", "size": 336, "crop_size": 336,
                "do_center_crop": True, "resample": 2}  # openai/clip-vit-large-patch14-336's old format
    cfg = ImageTransformConfig.from_hf_preprocessor(old_clip)
    assert (cfg.image_size, cfg.resize_strategy, cfg.resize_size, cfg.resample) == (336, "resize-crop", None,
                                                                                    "bilinear")
    assert cfg.mean == OPENAI_CLIP_MEAN and cfg.std == OPENAI_CLIP_STD  # the class defaults fill the gaps


def test_from_hf_preprocessor_errors(tmp_path):
    with pytest.raises(CheckpointError, match="preprocessor_config.json"):
        ImageTransformConfig.from_hf_preprocessor(tmp_path)
    with pytest.raises(ConfigError, match="not square"):
        ImageTransformConfig.from_hf_preprocessor({"size": {"height": 10, "width": 20}, "do_center_crop": False})
    with pytest.raises(ConfigError, match="non-square"):
        ImageTransformConfig.from_hf_preprocessor({"size": {"shortest_edge": 10}, "do_center_crop": False})
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"size": {"shortest_edge": 10}, "crop_size": 8,
                                                                   "resample": 3, "image_std": [0, 1, 1]}))
    with pytest.raises(ConfigError, match="std"):
        ImageTransformConfig.from_hf_preprocessor(tmp_path)


def test_config_validation():
    with pytest.raises(ConfigError, match="resize_strategy"):
        ImageTransformConfig(image_size=8, resize_strategy="squash")
    with pytest.raises(ConfigError, match="resample"):
        ImageTransformConfig(image_size=8, resample="cubic")
    with pytest.raises(ConfigError, match="mean"):
        ImageTransformConfig(image_size=8, mean=(0.5, 0.5))


# --------------------------------------------------------------------------------------- multi-tower
def test_multi_image_transform_concatenates_channels():
    dino = ImageTransformConfig(image_size=24, resize_strategy="resize-naive", mean=IMAGENET_MEAN, std=IMAGENET_STD)
    siglip = ImageTransformConfig(image_size=24, resize_strategy="resize-naive")
    images = [_random_image(30, 50, 4), _random_image(50, 30, 5)]
    out = MultiImageTransform([dino, siglip])(images)
    assert out.shape == (2, 6, 24, 24)
    assert torch.equal(out[:, :3], preprocess(images, dino)) and torch.equal(out[:, 3:], preprocess(images, siglip))
    assert not torch.equal(out[:, :3], out[:, 3:])  # the two normalisations differ


def test_multi_image_transform_errors():
    with pytest.raises(ConfigError, match="image sizes differ"):
        MultiImageTransform([ImageTransformConfig(image_size=24), ImageTransformConfig(image_size=32)])
    with pytest.raises(InputError, match="PIL"):
        MultiImageTransform([ImageTransformConfig(image_size=24)])([np.zeros((4, 4, 3), dtype=np.uint8)])
