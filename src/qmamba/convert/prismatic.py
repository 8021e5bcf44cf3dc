"""A peer's run directory (prismatic's layout, which Cobra and ML-Mamba keep) and the model assembled from it.

    RUN/config.json                        {"model": {"vision_backbone_id": "dinosiglip-vit-so-384px",
                                             "llm_backbone_id": ..., "arch_specifier": ...,
                                             "image_resize_strategy": ...}}
    RUN/checkpoints/latest-checkpoint.pt   torch.save({"model": {"projector": {...}, "llm_backbone": {...}, ...}})

The vision towers are not in the run: they are timm's (``vit_large_patch14_reg4_dinov2.lvd142m`` and
``vit_so400m_patch14_siglip_384``), read from the files the user names and cut after their second-to-last block,
features channel-concatenated (DINOv2 first), as the peers' fused backbone does.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from qmamba.convert.pickled import load_tensors_only
from qmamba.convert.timm_vision import find_timm_weights, read_timm_state, timm_to_tower, unknown_keys_error
from qmamba.errors import CheckpointError, ConfigError
from qmamba.models import checkpoints as ckpt
from qmamba.models.multimodal import MultimodalConfig, MultimodalModel
from qmamba.utils.config import read_json

CHECKPOINT = Path("checkpoints") / "latest-checkpoint.pt"
FUSED_VISION = re.compile(r"^dinosiglip-vit-so-(\d+)px$")
TIMM_ACT = "gelu"  # timm's ViTs use exact GELU (nn.GELU), SigLIP included; transformers' SigLIP default is tanh's


@dataclass
class RunDir:
    """What a peer's run directory holds: its resolved model config and the checkpoint's module dicts."""

    path: Path
    model: dict  # config.json's "model" section
    modules: dict[str, dict[str, Tensor]]  # checkpoint["model"]: module name -> its state dict
    file: Path  # the checkpoint file

    @property
    def image_size(self) -> int:
        vid = str(self.model.get("vision_backbone_id"))
        m = FUSED_VISION.match(vid)
        if not m:
            raise ConfigError(f"{self.path / 'config.json'}: vision_backbone_id={vid!r}; qmamba converts the fused "
                              f"DINOv2 + SigLIP backbone ('dinosiglip-vit-so-<size>px') only")
        return int(m.group(1))


def read_run_dir(path: str | Path, modules: tuple[str, ...], what: str) -> RunDir:
    """Read ``config.json`` and the checkpoint (tensors only); the checkpoint must hold every module named."""
    path = ckpt.require_dir(path, what)
    config = read_json(path / "config.json", f"{what} run config")
    model = config.get("model")
    if not isinstance(model, dict):
        raise ConfigError(f"{path / 'config.json'}: no 'model' section; give the run directory the peer wrote "
                          f"(it holds config.json and {CHECKPOINT})")
    file = path / CHECKPOINT
    payload = load_tensors_only(file, what)
    state = payload.get("model") if isinstance(payload, dict) else None
    if not isinstance(state, dict):
        keys = sorted(payload)[:8] if isinstance(payload, dict) else []
        raise CheckpointError(f"{file}: expected a dict with a 'model' entry (module name -> state dict), got "
                              f"{type(payload).__name__} with keys {keys}")
    missing = [m for m in modules if m not in state]
    if missing:
        raise CheckpointError(f"{file}: the checkpoint's 'model' lacks {missing} (it holds {sorted(state)}); "
                              f"fix: give the finetuned run's checkpoint, which stores every trained module")
    return RunDir(path, model, state, file)


def peer_vision(config: MultimodalConfig, image_size: int, resize_strategy: str | None) -> MultimodalConfig:
    """``config`` with its dinosiglip towers set up as the peer runs timm's: both at ``image_size`` (position
    tables resampled at conversion, so transformers never interpolates) and SigLIP with timm's exact GELU."""
    vision = config.vision
    if vision.kind != "dinosiglip":
        raise ConfigError(f"preset vision kind {vision.kind!r}; the peers' backbone is 'dinosiglip'")
    strategy = {"resize_strategy": resize_strategy} if resize_strategy else {}
    config = copy.deepcopy(config)
    config.vision = dataclasses.replace(  # a new VisionConfig: the same checks a stored config gets
        vision, image_size=image_size,
        transforms=[{**t, "image_size": image_size, **strategy} for t in vision.transforms],
        hf_configs=[{**vision.hf_configs[0], "image_size": image_size},
                    {**vision.hf_configs[1], "image_size": image_size, "hidden_act": TIMM_ACT}])
    return config


def vision_state(config: MultimodalConfig, dinov2: str | Path,
                 siglip: str | Path) -> tuple[dict[str, Tensor], dict[str, Path]]:
    """Both towers' tensors under ``vision.towers.{0,1}.model.*`` and the file each tower came from (by key
    prefix); a key no rule takes ends it with one error that names its file."""
    from qmamba.models.vision import feature_index, hf_vision_config

    out: dict[str, Tensor] = {}
    files: dict[str, Path] = {}
    grid = config.vision.grids[0]
    for i, (kind, source) in enumerate((("dinov2", dinov2), ("siglip", siglip))):
        file = find_timm_weights(source, f"{kind} tower")
        n_layers = hf_vision_config(config.vision.hf_configs[i]).num_hidden_layers
        keep = feature_index(config.vision.feature_layer, n_layers, f"{kind} tower")  # blocks before the features
        state, unknown = timm_to_tower(read_timm_state(file, f"{kind} tower"), kind, keep, grid, str(file))
        if unknown:
            raise unknown_keys_error(file, unknown, [], f"give timm's {kind} ViT weights (timm or open_clip names)")
        out.update({f"vision.towers.{i}.model.{k}": v for k, v in state.items()})
        files[f"vision.towers.{i}."] = file
    return out, files


def assemble(config: MultimodalConfig, state: dict[str, Tensor], files: dict[str, Path],
             dtype: torch.dtype | None = None) -> MultimodalModel:
    """Build ``config`` without random init and fill it from ``state``, strictly: anything the model needs that
    ``state`` lacks, or that ``state`` holds and the model does not, is named in one error with its file
    (``files``: key prefix -> file; other keys come from the run's checkpoint, ``files[""]``)."""
    with torch.device("meta"):
        model = MultimodalModel(config, dtype=dtype, init=False)
    model = model.to_empty(device="cpu")
    own = model.state_dict()
    filled = {k: torch.zeros_like(v) for k, v in own.items() if k.endswith(".embeddings.mask_token")}  # unused
    optional = ("llm.lm_head.weight",) if config.llm.tie_embeddings else ()
    missing = [k for k in own if k not in state and k not in filled and k not in optional]
    unknown = [k for k in state if k not in own]
    if missing or unknown:
        where = sorted({str(_file_of(k, files)) for k in missing + unknown})
        raise unknown_keys_error(Path(", ".join(where)), unknown, missing,
                                 "check that the preset matches the run (--preset) and the tower files are the ones "
                                 "the peer trained with")
    where = "weights converted from " + ", ".join(sorted({str(f) for f in files.values()}))
    ckpt.load_into(model, {**filled, **{k: v.to(own[k].dtype) for k, v in state.items()}}, where, optional=optional)
    model.llm.tie_weights()
    return model.eval()


def _file_of(key: str, files: dict[str, Path]) -> Path:
    return next((f for prefix, f in files.items() if prefix and key.startswith(prefix)), files.get("", Path("?")))


def llm_vocab(config: MultimodalConfig, state: dict[str, Tensor]) -> MultimodalConfig:
    """The LM's vocabulary as the checkpoint stores it (every embedding row is a token the peer can emit) and
    whether its head is tied to the embedding."""
    emb, head = state.get("llm.backbone.embedding.weight"), state.get("llm.lm_head.weight")
    if emb is None:
        return config
    config = copy.deepcopy(config)
    config.llm.vocab_size, config.llm.pad_vocab_size_multiple = emb.shape[0], 1
    config.llm.tie_embeddings = head is None or (head.shape == emb.shape and torch.equal(head, emb))
    if config.llm.tie_embeddings:
        state.pop("llm.lm_head.weight", None)
    return config


def chat_template(llm_backbone_id: str) -> str:
    """The peers' prompt builder as a qmamba template: zephyr's chat format for a ``*-zephyr`` LM (and, in
    ML-Mamba, every Mamba LM), 'In: ... Out: ' for Cobra's base Mamba LMs."""
    return "zephyr" if llm_backbone_id.endswith("zephyr") else "plain"


def build(run: RunDir, config: MultimodalConfig, connector: dict[str, Tensor], llm: dict[str, Tensor],
          dinov2: str | Path, siglip: str | Path, dtype: torch.dtype | None = None) -> MultimodalModel:
    """The converted model: ``config``'s vision set up as the peer's timm towers, its LM's vocabulary read from
    the checkpoint, every tensor placed (``connector`` and ``llm`` already under qmamba's names)."""
    config = peer_vision(config, run.image_size, run.model.get("image_resize_strategy"))
    state = {**connector, **llm}
    config = llm_vocab(config, state)
    towers, files = vision_state(config, dinov2, siglip)
    return assemble(config, {**towers, **state}, {"": run.file, **files}, dtype)


def save(model: MultimodalModel, out: str | Path, tokenizer_dir: str | Path | None, provenance: dict) -> Path:
    """Write the model directory (``save_pretrained``) with the LM's tokenizer and a ``converted_from.json``."""
    from qmamba.utils.config import write_json

    out = Path(out).expanduser()
    tokenizer = None
    if tokenizer_dir is not None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(ckpt.require_dir(tokenizer_dir, "--llm-tokenizer")))
        if len(tokenizer) > model.config.llm.padded_vocab_size:
            raise ConfigError(f"{tokenizer_dir}: the tokenizer has {len(tokenizer)} tokens but the checkpoint's "
                              f"LM embeds {model.config.llm.padded_vocab_size}; give the peer's LM tokenizer")
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, tokenizer=tokenizer, dtype=None)  # each tensor as the model holds it (--dtype)
    write_json(out / "converted_from.json", provenance)
    return out


def provenance(peer: str, run: RunDir, dinov2: str | Path, siglip: str | Path, preset: str) -> dict:
    """What ``converted_from.json`` records: the peer, its run directory and checkpoint, the towers, the preset."""
    return {"peer": peer, "run_dir": str(run.path), "checkpoint": str(run.file), "model_id": run.model.get("model_id"),
            "dinov2": str(dinov2), "siglip": str(siglip), "preset": preset}
