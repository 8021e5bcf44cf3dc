"""Cobra's released runs (``cobra+3b`` and its variants) -> a qmamba model directory.

Cobra's checkpoint stores two modules (keys inside each as Cobra's ``state_dict()`` writes them):

    projector     FusedMLPProjector: projector.{0,2,4}.{weight,bias}  Linear(2176 -> 8704), GELU, Linear(-> 2560),
                  GELU, Linear(2560 -> 2560)                          -> connector.projector.{0,2,4}.*
    llm_backbone  Cobra's own Mamba port of mamba-2.8b-zephyr, mamba_ssm's names under ``llm.``:
                  llm.backbone.{embedding, layers.{i}.{norm, mixer.*}, norm_f}, llm.lm_head -> the same keys

The image's tokens go before all text (``image_position='prefix'``, no BOS: the GPT-NeoX tokenizer adds none),
the prompt is zephyr's chat format and generation stops at the tokenizer's eos, ``<|endoftext|>``: qmamba's
``zephyr`` template, stored in the directory.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from qmamba.convert.prismatic import RunDir, build, chat_template, provenance, read_run_dir, save
from qmamba.errors import ConfigError
from qmamba.models.connectors import MLPConfig
from qmamba.models.presets import get_preset

MODULES = ("projector", "llm_backbone")
_ARCHS = ("fused-gelu-mlp", "gelu-mlp", "linear")  # arch_specifier suffix -> MLPConfig.arch (longest first)


def projector_arch(arch_specifier: str) -> str:
    """Cobra's ``arch_specifier`` ('no-align+fused-gelu-mlp', ...) -> the MLP connector's arch."""
    for arch in _ARCHS:
        if arch_specifier.endswith(arch):
            return arch
    raise ConfigError(f"Cobra arch_specifier={arch_specifier!r}: qmamba converts the projectors ending in "
                      f"{', '.join(_ARCHS)}")


def cobra_keys(run: RunDir) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """(connector, llm) tensors under qmamba's names; other modules in the checkpoint are refused."""
    extra = sorted(set(run.modules) - set(MODULES))
    if extra:
        raise ConfigError(f"{run.file}: modules {extra} besides {list(MODULES)}; qmamba converts runs whose vision "
                          f"towers stayed frozen (their weights are the timm files)")
    connector = {f"connector.{k}": v for k, v in run.modules["projector"].items()}
    return connector, dict(run.modules["llm_backbone"])  # Cobra's port already says llm.backbone.*, llm.lm_head.*


def convert_cobra(run_dir: str | Path, dinov2: str | Path, siglip: str | Path, llm_tokenizer: str | Path | None,
                  out: str | Path | None, preset: str = "cobra", dtype: torch.dtype | None = None):
    """Read a Cobra run directory and the timm tower weights; return the model, saved to ``out`` when given."""
    run = read_run_dir(run_dir, MODULES, "Cobra run")
    config = get_preset(preset)
    config.connector = MLPConfig(arch=projector_arch(str(run.model.get("arch_specifier", ""))))
    config.image_position, config.chat_template = "prefix", chat_template(str(run.model.get("llm_backbone_id", "")))
    model = build(run, config, *cobra_keys(run), dinov2, siglip, dtype)
    if out is not None:
        save(model, out, llm_tokenizer, provenance("cobra", run, dinov2, siglip, preset))
    return model
