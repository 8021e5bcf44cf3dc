"""The model a stage trains: from the previous stage's export, a model directory, pretrained parts or a
preset's random weights (seeded, so a restarted run rebuilds exactly the same frozen weights)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch

from qmamba.assets import resolve
from qmamba.data.tokenizer import load_tokenizer
from qmamba.errors import ConfigError
from qmamba.models.checkpoints import load_state_dict
from qmamba.models.connectors import connector_config
from qmamba.models.connectors.qmamba import QMambaConnector
from qmamba.models.multimodal import MultimodalModel
from qmamba.models.presets import get_preset
from qmamba.train.config import ModelConfig
from qmamba.utils.config import config_to_dict

log = logging.getLogger("qmamba")


def build_model(spec: ModelConfig, start_from: Path | None, seed: int) -> tuple[MultimodalModel, object]:
    """(model on CPU in fp32, tokenizer). ``start_from``: the previous stage's exported model."""
    torch.manual_seed(seed)
    spec = _resolved(spec)
    source = start_from or (Path(spec.init_from) if spec.init_from else None)
    if source is not None:
        model = MultimodalModel.from_pretrained(source, dtype=torch.float32)
        log.info("model: loaded from %s", source)
    else:
        model = _new_model(spec)
    tok_dir = spec.tokenizer or (str(source) if source is not None else spec.llm)
    if tok_dir is None:
        raise ConfigError("model.tokenizer: a preset with random weights needs a tokenizer directory")
    return model, load_tokenizer(tok_dir)


def _resolved(spec: ModelConfig) -> ModelConfig:
    """``assets:`` paths made real (qmamba's shipped micro backbones)."""
    def one(p):
        return None if p is None else str(resolve(p))

    vision = [one(v) for v in spec.vision] if isinstance(spec.vision, list) else one(spec.vision)
    return dataclasses.replace(spec, init_from=one(spec.init_from), llm=one(spec.llm), vision=vision,
                               tokenizer=one(spec.tokenizer), mamba_init=one(spec.mamba_init),
                               preprocess_init=one(spec.preprocess_init))


def _new_model(spec: ModelConfig) -> MultimodalModel:
    if spec.preset is None:
        raise ConfigError("model: give a preset, init_from (a model directory) or both llm and vision directories")
    config = get_preset(spec.preset)
    if spec.connector:
        merged = {**config_to_dict(config.connector), **spec.connector}
        config = dataclasses.replace(config, connector=connector_config(merged, "model.connector"))
    if spec.llm or spec.vision:
        model = MultimodalModel.from_components(
            config.connector, spec.llm or config.llm, spec.vision or config.vision,
            image_position=config.image_position, chat_template=config.chat_template)
    else:
        model = MultimodalModel(config)
    _init_qmamba(model, spec)
    log.info("model: preset %s (llm %s, vision %s)", spec.preset, spec.llm or "random", spec.vision or "random")
    return model


def _init_qmamba(model: MultimodalModel, spec: ModelConfig) -> None:
    if not (spec.mamba_init or spec.preprocess_init):
        return
    if not isinstance(model.connector, QMambaConnector):
        raise ConfigError("model.mamba_init / model.preprocess_init apply to the qmamba connector only")
    if spec.mamba_init:
        model.connector.load_mamba_layers(spec.mamba_init)
    if spec.preprocess_init:  # a trained VL-Mamba model: its connector becomes Q-Mamba's preprocessing
        state = load_state_dict(Path(spec.preprocess_init), "model.preprocess_init")
        sub = {k[len("connector."):]: v for k, v in state.items() if k.startswith("connector.")}
        model.connector.load_preprocess(sub, f"model.preprocess_init ({spec.preprocess_init})")
