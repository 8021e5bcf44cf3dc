"""Conversion between mamba_ssm and transformers (``MambaForCausalLM`` / ``Mamba2ForCausalLM``) formats.

The tensors are the same; transformers names the embedding ``backbone.embeddings`` and spells the
config differently. Everything here maps plain dicts, so it needs no transformers import.
"""

from __future__ import annotations

import math

from torch import Tensor

from qmamba.errors import CheckpointError

HF_MODEL_TYPES = {"mamba": "Mamba1", "mamba2": "Mamba2"}
_HF_ARCH = {"Mamba1": ("MambaForCausalLM", "mamba"), "Mamba2": ("Mamba2ForCausalLM", "mamba2")}


def lm_format(cfg: dict) -> str:
    """'mamba_ssm' or 'transformers' for an LM config.json; anything else is the wrong family."""
    if "d_model" in cfg and "n_layer" in cfg:
        return "mamba_ssm"
    if cfg.get("model_type") in HF_MODEL_TYPES:
        return "transformers"
    return "unknown"


def hf_to_mamba_ssm_config(hf: dict, where: str) -> dict:
    """A transformers Mamba/Mamba2 config dict -> a mamba_ssm ``MambaConfig`` dict."""
    layer = HF_MODEL_TYPES[hf["model_type"]]
    if hf.get("hidden_act", "silu") not in ("silu", "swish"):
        raise CheckpointError(f"{where}: hidden_act {hf['hidden_act']!r} is not supported (Mamba uses silu)")
    common = {"d_state": hf.get("state_size", 16 if layer == "Mamba1" else 128),
              "d_conv": hf.get("conv_kernel", 4), "expand": hf.get("expand", 2),
              "dt_min": hf.get("time_step_min", 0.001), "dt_max": hf.get("time_step_max", 0.1),
              "dt_init_floor": hf.get("time_step_floor", 1e-4),
              "conv_bias": hf.get("use_conv_bias", True), "bias": hf.get("use_bias", False)}
    if layer == "Mamba1":
        ssm = {"layer": "Mamba1", **common, "dt_rank": hf.get("time_step_rank", "auto"),
               "dt_init": hf.get("time_step_init_scheme", "random"), "dt_scale": hf.get("time_step_scale", 1.0)}
    else:
        hidden, expand = hf["hidden_size"], hf.get("expand", 2)
        if hf["num_heads"] * hf["head_dim"] != hidden * expand:
            raise CheckpointError(f"{where}: num_heads * head_dim = {hf['num_heads'] * hf['head_dim']} "
                                  f"but hidden_size * expand = {hidden * expand}")
        ssm = {"layer": "Mamba2", **common, "headdim": hf["head_dim"], "ngroups": hf.get("n_groups", 1),
               "chunk_size": hf.get("chunk_size", 256), "rmsnorm": hf.get("rms_norm", True),
               "dt_limit": [_float(v) for v in hf.get("time_step_limit", (0.0, math.inf))]}
    return {
        "d_model": hf["hidden_size"], "d_intermediate": 0, "n_layer": hf["num_hidden_layers"],
        "vocab_size": hf["vocab_size"], "ssm_cfg": ssm, "rms_norm": True,
        "residual_in_fp32": hf.get("residual_in_fp32", True), "fused_add_norm": True,
        "pad_vocab_size_multiple": 1, "tie_embeddings": hf.get("tie_word_embeddings", layer == "Mamba1"),
        "norm_epsilon": hf.get("layer_norm_epsilon", 1e-5),
    }


def _float(value) -> float:
    """A JSON float; transformers >= 5 writes infinities as {"__float__": "Infinity"}."""
    if isinstance(value, dict) and "__float__" in value:
        return float(value["__float__"])
    return float(value)


def mamba_ssm_to_hf_config(cfg: dict, layer: str, padded_vocab: int, d_inner_checks: dict) -> dict:
    """A resolved mamba_ssm config -> a transformers config dict (for ``save_pretrained(format='transformers')``)."""
    ssm = cfg["ssm_cfg"]
    arch, model_type = _HF_ARCH[layer]
    out = {
        "architectures": [arch], "model_type": model_type, "hidden_size": cfg["d_model"],
        "num_hidden_layers": cfg["n_layer"], "vocab_size": padded_vocab,
        "layer_norm_epsilon": cfg.get("norm_epsilon", 1e-5), "residual_in_fp32": cfg["residual_in_fp32"],
        "tie_word_embeddings": cfg["tie_embeddings"], "state_size": ssm["d_state"], "expand": ssm["expand"],
        "conv_kernel": ssm["d_conv"], "use_bias": ssm["bias"], "use_conv_bias": ssm["conv_bias"],
        "hidden_act": "silu", "time_step_min": ssm["dt_min"], "time_step_max": ssm["dt_max"],
        "time_step_floor": ssm["dt_init_floor"],
    }
    if layer == "Mamba1":
        out.update(time_step_rank=d_inner_checks["dt_rank"], time_step_scale=ssm["dt_scale"],
                   time_step_init_scheme=ssm["dt_init"], intermediate_size=d_inner_checks["d_inner"])
    else:
        out.update(num_heads=d_inner_checks["nheads"], head_dim=ssm["headdim"], n_groups=ssm["ngroups"],
                   chunk_size=ssm["chunk_size"], rms_norm=ssm["rmsnorm"],
                   time_step_limit=list(ssm["dt_limit"]))
    return out


def check_hf_exportable(cfg: dict, layer: str, where: str) -> None:
    """transformers has no LayerNorm variant, MLP blocks, hybrid attention or partial-SSM Mamba-2."""
    ssm = cfg["ssm_cfg"]
    bad = []
    if not cfg["rms_norm"]:
        bad.append("rms_norm=False")
    if cfg["d_intermediate"]:
        bad.append(f"d_intermediate={cfg['d_intermediate']}")
    if layer == "Mamba2" and (ssm.get("d_ssm") or ssm.get("D_has_hdim") or ssm.get("norm_before_gate")):
        bad.append("d_ssm / D_has_hdim / norm_before_gate")
    if bad:
        raise CheckpointError(f"{where}: transformers' Mamba classes cannot express {', '.join(bad)}; "
                              f"save with format='mamba_ssm'")


def hf_to_mamba_ssm_keys(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k.replace("backbone.embeddings.", "backbone.embedding."): v for k, v in state.items()}


def mamba_ssm_to_hf_keys(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k.replace("backbone.embedding.", "backbone.embeddings."): v for k, v in state.items()}
