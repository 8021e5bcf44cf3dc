"""Pretraining the micro SigLIP: a transformers ``SiglipModel`` trained with SigLIP's sigmoid image-text
loss on the (image, caption) pairs of a synth world's align set.

    result = pretrain_vision("micro", tokenizer, "micro/siglip", VisionTrainConfig(steps=600))

Vision tower: ``qmamba.models.vision.SIGLIP_MICRO`` (64 px, patch 8 -> 64 patches of width 128, 4 layers,
attention-pooling head). Text tower: ``TEXT_TOWER`` over the micro BPE vocabulary; a caption is its
tokens + ``<|endoftext|>``, padded with the pad id (also ``<|endoftext|>``) to ``text_len`` as SigLIP
pads to max length, and is pooled at the last position. Images go through qmamba's own ``preprocess``
(resize-naive to 64, rescale 1/255, mean = std = 0.5), the transform ``VisionEncoder`` applies. The
logit scale and bias start at log 10 and -10 (the SigLIP paper). The last ``heldout`` align pairs are
never trained on; image -> caption retrieval is measured on them, each image against the captions of
its batch of ``eval_batch`` (chance 1 / eval_batch), before and after training.

With ``aux_weight`` > 0 (the small size), linear heads on the cell-pooled patch features of the layer the
connectors read (``hidden_states[-2]``, pooled as ``probe.cell_pool``) also learn each cell's shape and colour
from the world's scene graphs; the loss adds ``aux_weight`` times their cross-entropy. The heads are dropped
after training: the saved model is a plain ``SiglipModel``. Other sizes pass their towers (``towers``).

Written to ``out_dir``: config.json + model.safetensors (``SiglipModel.save_pretrained``), a
``preprocessor_config.json`` in ``SiglipImageProcessor``'s format, and the tokenizer files.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from qmamba.data.image import ImageTransformConfig, load_image, preprocess
from qmamba.data.llava import load_records
from qmamba.data.synth.manifest import SynthManifest
from qmamba.errors import ConfigError, InputError
from qmamba.micro.loop import LossLog, autocast, fit, pick_device, seed_everything
from qmamba.micro.tokenizer import save_tokenizer
from qmamba.models.vision import SIGLIP_MICRO, vision_preset
from qmamba.utils.config import write_json

TEXT_TOWER = {"hidden_size": 128, "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 4,
              "hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-6}


@dataclass
class VisionTrainConfig:
    """How the micro SigLIP is pretrained (the defaults built the shipped micro encoder: ``qmamba micro build``)."""

    steps: int = 600
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_ratio: float = 0.1
    grad_clip: float = 1.0
    text_len: int = 64  # the text tower's max_position_embeddings
    heldout: int = 256  # align pairs kept out of training, for retrieval
    eval_batch: int = 64  # captions each held-out image is ranked against
    seed: int = 0
    aux_weight: float = 0.0  # weight of the per-cell shape / colour loss (0: the sigmoid loss alone)

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 2:
            raise ConfigError(f"vision pretraining: steps={self.steps}, batch_size={self.batch_size}; "
                              f"need steps >= 1 and batch_size >= 2 (the loss contrasts pairs in a batch)")
        if self.heldout < self.eval_batch or self.eval_batch < 2:
            raise ConfigError(f"vision pretraining: heldout={self.heldout} must be >= eval_batch={self.eval_batch} "
                              f">= 2 (retrieval ranks each image against eval_batch captions)")


# ---------------------------------------------------------------------------------------------- model
def siglip_config(tokenizer, text_len: int = 64, towers: tuple[dict, dict] | None = None):
    """The ``SiglipConfig``: ``SIGLIP_MICRO`` vision tower, ``TEXT_TOWER`` text tower on ``tokenizer``
    (or ``towers`` = (vision fields, text fields) of another size)."""
    from transformers import SiglipConfig

    vision_tower, text_tower = towers or (SIGLIP_MICRO, TEXT_TOWER)
    vision = {k: v for k, v in vision_tower.items() if k != "model_type"}
    text = {**text_tower, "vocab_size": len(tokenizer), "max_position_embeddings": text_len,
            "projection_size": vision["hidden_size"], "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.eos_token_id, "bos_token_id": None}
    return SiglipConfig(text_config=text, vision_config=vision)


def new_siglip(tokenizer, text_len: int = 64, towers: tuple[dict, dict] | None = None):
    """A freshly initialised ``SiglipModel`` (seed torch first), logit scale log 10 and bias -10."""
    from transformers import SiglipModel

    model = SiglipModel(siglip_config(tokenizer, text_len, towers))
    with torch.no_grad():
        model.logit_scale.fill_(math.log(10.0))
        model.logit_bias.fill_(-10.0)
    return model


def image_transform(image_size: int | None = None) -> ImageTransformConfig:
    """The micro SigLIP's preprocessing, as ``VisionEncoder`` applies it (vision preset 'siglip-micro'), at
    ``image_size`` when given (the same transform at another resolution)."""
    cfg = vision_preset("siglip-micro").transform_configs()[0]
    return cfg if image_size is None else dataclasses.replace(cfg, image_size=image_size)


def preprocessor_config(cfg: ImageTransformConfig) -> dict:
    """transformers' ``SiglipImageProcessor`` config for ``cfg`` (resize-naive, bicubic)."""
    if cfg.resize_strategy != "resize-naive" or cfg.resample != "bicubic":
        raise ConfigError(f"SigLIP's processor resizes naively with bicubic; got {cfg.resize_strategy}/{cfg.resample}")
    return {"do_resize": True, "size": {"height": cfg.image_size, "width": cfg.image_size}, "resample": 3,
            "do_rescale": True, "rescale_factor": cfg.rescale_factor, "do_normalize": True,
            "image_mean": list(cfg.mean), "image_std": list(cfg.std), "image_processor_type": "SiglipImageProcessor"}


# ----------------------------------------------------------------------------------------------- data
def load_pairs(world: str | Path | SynthManifest) -> tuple[list[Path], list[str]]:
    """(image paths, captions) of the world's align set, in file order."""
    manifest = world if isinstance(world, SynthManifest) else SynthManifest.load(world)
    good, bad = load_records(manifest.path("align"))
    if bad:
        raise InputError(f"{manifest.path('align')}: {len(bad)} malformed records, e.g. {bad[0]}")
    root = manifest.path("images")
    return [root / r.image for r in good], [next(t for role, t in r.turns if role == "assistant").strip()
                                            for r in good]


def load_pixels(paths: list[Path], cfg: ImageTransformConfig, chunk: int = 256) -> torch.Tensor:
    """Every image through qmamba's ``preprocess``: (n, 3, S, S) float32."""
    parts = [preprocess([load_image(p) for p in paths[i:i + chunk]], cfg) for i in range(0, len(paths), chunk)]
    return torch.cat(parts)  # (n, 3, S, S)


def caption_ids(tokenizer, captions: list[str], text_len: int) -> tuple[torch.Tensor, int]:
    """(n, text_len) ids: tokens + eos, cut to ``text_len``, right-padded with the pad id; and the
    number of captions that had to be cut."""
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    out = torch.full((len(captions), text_len), pad, dtype=torch.long)
    cut = 0
    for i, text in enumerate(captions):
        ids = tokenizer.encode(text, add_special_tokens=False) + [eos]
        cut += len(ids) > text_len
        out[i, :min(len(ids), text_len)] = torch.tensor(ids[:text_len])
    return out, cut


# ------------------------------------------------------------------------------------ train, evaluate
def train_siglip(model, pixels: torch.Tensor, ids: torch.Tensor, cfg: VisionTrainConfig, device: torch.device,
                 show_progress: bool = True, aux: CellHeads | None = None) -> LossLog:
    """``cfg.steps`` steps of the sigmoid loss on shuffled pairs (reshuffled each epoch); with ``aux``, plus
    ``cfg.aux_weight`` times its per-cell loss (the heads train with the model)."""
    def backward(idx: torch.Tensor) -> torch.Tensor:
        with autocast(device):
            out = model(input_ids=ids[idx].to(device), pixel_values=pixels[idx].to(device), return_loss=True,
                        output_hidden_states=aux is not None)
            loss = out.loss
            if aux is not None:
                feats = out.vision_model_output.hidden_states[-2]  # (b, p, d): the layer connectors read
                loss = loss + cfg.aux_weight * aux.loss(feats, idx)
        loss.backward()
        return loss.detach()

    trained = model if aux is None else torch.nn.ModuleDict({"siglip": model, "aux": aux})
    return fit(trained, len(pixels), cfg.batch_size, cfg.steps, cfg.seed,
               (cfg.lr, cfg.weight_decay, cfg.betas, cfg.warmup_ratio), cfg.grad_clip, backward, "pretrain SigLIP",
               show_progress)


class CellHeads(torch.nn.Module):
    """Linear shape and colour heads on cell-pooled patch features, with the training scenes' labels."""

    def __init__(self, d: int, shapes: torch.Tensor, colors: torch.Tensor, image_size: int, grid: int):
        super().__init__()
        from qmamba.micro.probe import COLOR_CLASSES, SHAPE_CLASSES

        self.shape, self.color = torch.nn.Linear(d, len(SHAPE_CLASSES)), torch.nn.Linear(d, len(COLOR_CLASSES))
        self.register_buffer("shapes", shapes, persistent=False)  # (n, g*g)
        self.register_buffer("colors", colors, persistent=False)  # (n, g*g)
        self.image_size, self.grid = image_size, grid

    def loss(self, feats: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        from qmamba.micro.probe import cell_pool

        cells = cell_pool(feats.float(), self.image_size, self.grid)  # (b, g*g, d)
        idx = idx.to(self.shapes.device)
        ce = torch.nn.functional.cross_entropy
        return (ce(self.shape(cells).flatten(0, 1), self.shapes[idx].flatten())
                + ce(self.color(cells).flatten(0, 1), self.colors[idx].flatten()))


def cell_heads(world, d: int, n: int, image_size: int) -> CellHeads:
    """``CellHeads`` for the first ``n`` align scenes of ``world`` (the order of its align pairs)."""
    import json

    from qmamba.data.synth.scene import Scene
    from qmamba.micro.probe import cell_labels

    manifest = world if isinstance(world, SynthManifest) else SynthManifest.load(world)
    scenes = [Scene.from_dict(s) for s in json.loads(manifest.path("scenes", "align").read_text())][:n]
    labels = [cell_labels(s) for s in scenes]
    return CellHeads(d, torch.tensor([a for a, _ in labels]), torch.tensor([b for _, b in labels]), image_size,
                     scenes[0].grid)


@torch.no_grad()
def retrieval_accuracy(model, pixels: torch.Tensor, ids: torch.Tensor, captions: list[str], batch: int,
                       device: torch.device) -> float:
    """Image -> caption top-1 accuracy, each image ranked against the captions of its batch of ``batch``
    (full batches only). A retrieved caption with the same text as the true one counts as right."""
    model.eval()
    hits, n = 0, (len(pixels) // batch) * batch
    for start in range(0, n, batch):
        sl = slice(start, start + batch)
        with autocast(device):
            out = model(input_ids=ids[sl].to(device), pixel_values=pixels[sl].to(device))
        best = out.logits_per_image.argmax(-1).tolist()  # (batch,) caption index per image
        hits += sum(captions[start + j] == captions[start + k] for j, k in enumerate(best))
    return hits / n


def save_siglip(model, out_dir: str | Path, tokenizer, transform: ImageTransformConfig) -> Path:
    """``save_pretrained`` (safetensors) + preprocessor_config.json + the tokenizer files."""
    out = Path(out_dir)
    model.save_pretrained(str(out))
    write_json(out / "preprocessor_config.json", preprocessor_config(transform))
    save_tokenizer(tokenizer, out)
    return out


# ----------------------------------------------------------------------------------------- entry point
def pretrain_vision(world, tokenizer, out_dir, cfg: VisionTrainConfig | None = None, device=None,
                    show_progress: bool = True, towers: tuple[dict, dict] | None = None) -> dict:
    """Train the micro SigLIP on ``world``'s align pairs, save it to ``out_dir``; returns the measurements.
    ``towers``: (vision, text) tower fields of another size than ``SIGLIP_MICRO`` / ``TEXT_TOWER``."""
    cfg = cfg or VisionTrainConfig()
    device = pick_device(device)
    start = time.perf_counter()
    paths, captions = load_pairs(world)
    if len(paths) < cfg.heldout + cfg.batch_size:
        raise InputError(f"the world has {len(paths)} align pairs; vision pretraining needs heldout={cfg.heldout} "
                         f"+ batch_size={cfg.batch_size}: generate a larger world")
    transform = image_transform(None if towers is None else towers[0]["image_size"])
    pixels = load_pixels(paths, transform)  # (n, 3, S, S)
    ids, cut = caption_ids(tokenizer, captions, cfg.text_len)  # (n, text_len)
    split = len(paths) - cfg.heldout
    seed_everything(cfg.seed)
    model = new_siglip(tokenizer, cfg.text_len, towers).to(device)
    aux = None
    if cfg.aux_weight > 0:
        aux = cell_heads(world, model.config.vision_config.hidden_size, split, transform.image_size).to(device)
    held = (pixels[split:], ids[split:], captions[split:], cfg.eval_batch, device)
    before = retrieval_accuracy(model, *held)
    log = train_siglip(model, pixels[:split], ids[:split], cfg, device, show_progress, aux)
    result = {"config": asdict(cfg), "device": str(device), "parameters": sum(p.numel() for p in model.parameters()),
              "train_pairs": split, "heldout_pairs": cfg.heldout, "captions_cut": cut,
              "first_losses": log.losses[:5], "loss_curve": log.losses[:: max(1, cfg.steps // 20)],
              "train_loss": log.recent(50), "retrieval_chance": 1 / cfg.eval_batch,
              "retrieval_top1_before": before, "retrieval_top1": retrieval_accuracy(model, *held)}
    save_siglip(model.cpu(), out_dir, tokenizer, transform)
    result["seconds"] = time.perf_counter() - start
    return result
