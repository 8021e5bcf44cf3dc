"""ML-Mamba's released runs -> a qmamba model directory.

ML-Mamba's checkpoint stores four modules, each loaded by its own ``load_state_dict``:

    mlp                  Sequential(Linear(2176 -> d), GELU): 0.{weight,bias}         -> connector.mlp.0.*
    bidirectional_mamba  its Mamba-2 scan connector: layers.{i}.{mixer.*, norm, mlp.w1/w2/w3}, norm_f
                                                                            -> connector.bidirectional_mamba.*
    projector            FusedMLPProjector(d, d): projector.{0,2,4}.*      -> connector.projector.projector.*
    llm_backbone         mamba_ssm's MambaLMHeadModel (mamba2-2.7b): backbone.*, lm_head.weight -> llm.*

The image's tokens go before all text and every Mamba LM gets zephyr's chat format (ML-Mamba's prompt builder),
stopping at ``<|endoftext|>``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from qmamba.convert.prismatic import RunDir, build, provenance, read_run_dir, save
from qmamba.models.presets import get_preset

MODULES = ("mlp", "bidirectional_mamba", "projector", "llm_backbone")
_PREFIX = {"mlp": "connector.mlp.", "bidirectional_mamba": "connector.bidirectional_mamba.",
           "projector": "connector.projector.", "llm_backbone": "llm."}


def mlmamba_keys(run: RunDir) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """(connector, llm) tensors under qmamba's names; a module outside ``MODULES`` is reported with the rest."""
    connector: dict[str, Tensor] = {}
    llm: dict[str, Tensor] = {}
    for module, state in run.modules.items():
        prefix = _PREFIX.get(module, f"{module}.")  # an unknown module's keys stay unknown: named in the error
        (llm if module == "llm_backbone" else connector).update({prefix + k: v for k, v in state.items()})
    return connector, llm


def convert_mlmamba(run_dir: str | Path, dinov2: str | Path, siglip: str | Path, llm_tokenizer: str | Path | None,
                    out: str | Path | None, preset: str = "mlmamba", dtype: torch.dtype | None = None):
    """Read an ML-Mamba run directory and the timm tower weights; return the model, saved to ``out`` when given."""
    run = read_run_dir(run_dir, MODULES, "ML-Mamba run")
    config = get_preset(preset)
    config.image_position, config.chat_template = "prefix", "zephyr"
    model = build(run, config, *mlmamba_keys(run), dinov2, siglip, dtype)
    if out is not None:
        save(model, out, llm_tokenizer, provenance("mlmamba", run, dinov2, siglip, preset))
    return model
