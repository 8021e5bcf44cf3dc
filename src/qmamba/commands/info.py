"""Show a model: its kind, config, parameter counts per component and the number of visual tokens.

Takes a model directory (multimodal or language model) or a preset name (counted without memory). A directory's
weights files are opened at their headers (no tensor is loaded): a truncated file, or a pickle that loading with
weights_only refuses, is an error that names the file and the field at fault.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", help="a model directory")
    p.add_argument("--preset", help="a preset name instead of a directory (see --list-presets)")
    p.add_argument("--list-presets", action="store_true", help="list the preset names and exit")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def run(args: argparse.Namespace) -> int:
    from qmamba.models.presets import get_preset, list_presets

    if args.list_presets:
        print("\n".join(list_presets()))
        return 0
    if (args.model is None) == (args.preset is None):
        from qmamba.errors import ConfigError

        raise ConfigError("give a model directory or --preset NAME (not both)")
    summary = _preset_summary(get_preset(args.preset), args.preset) if args.preset else _dir_summary(Path(args.model))
    print(json.dumps(summary, indent=2) if args.json else _format(summary))
    return 0


def _count(module) -> int:
    return sum(p.numel() for p in {id(p): p for p in module.parameters()}.values())


def _multimodal_summary(model, name: str) -> dict:
    cfg = model.config
    return {"model": name, "kind": "multimodal", "vision": f"{cfg.vision.kind} ({cfg.vision.image_size}px, "
            f"{model.vision.num_patches} patches x {model.vision.d_vision})",
            "connector": cfg.connector.type, "llm": f"{cfg.llm.layer} d_model={cfg.llm.d_model} "
            f"n_layer={cfg.llm.n_layer} vocab={cfg.llm.padded_vocab_size}",
            "image_position": cfg.image_position, "chat_template": cfg.chat_template,
            "visual_tokens": model.num_visual_tokens, "parameters": model.parameter_counts()}


def _preset_summary(config, name: str) -> dict:
    import torch

    from qmamba.models.multimodal import MultimodalModel

    with torch.device("meta"):
        model = MultimodalModel(config, init=False)
    return _multimodal_summary(model, f"preset {name}")


def _dir_summary(path: Path) -> dict:
    import torch

    from qmamba.models.checkpoints import require_dir
    from qmamba.models.mamba_lm import MambaLM, read_lm_config
    from qmamba.models.multimodal import MODEL_TYPE, MultimodalConfig, MultimodalModel
    from qmamba.utils.config import read_json

    require_dir(path, "model")
    raw = read_json(path / "config.json", "model config")
    if raw.get("model_type") == MODEL_TYPE:
        with torch.device("meta"):
            model = MultimodalModel(MultimodalConfig.from_dict(raw, str(path / "config.json")), init=False)
        return {**_multimodal_summary(model, str(path)), "weights": _weights(path)}
    config, fmt = read_lm_config(path)
    with torch.device("meta"):
        lm = MambaLM(config, init=False)
    return {"model": str(path), "kind": f"language model ({fmt} format)", "llm": f"{config.layer} "
            f"d_model={config.d_model} n_layer={config.n_layer} vocab={config.padded_vocab_size}",
            "weights": _weights(path), "parameters": {"llm": _count(lm), "total": _count(lm)}}


def _weights(path: Path) -> str:
    """The weights files of a model directory, each checked at its header: 'NAME (FORMAT, N tensors, X MB)'."""
    from qmamba.errors import CheckpointError
    from qmamba.models.checkpoints import find_weights
    from qmamba.utils.weights_header import weights_summary

    file = find_weights(path, "model")
    files = [file]
    if file.name.endswith(".index.json"):
        try:
            files = [path / name for name in sorted(set(json.loads(file.read_text())["weight_map"].values()))]
        except (json.JSONDecodeError, KeyError) as e:
            raise CheckpointError(f"{file}: not a shard index ({type(e).__name__}: {e}): expected "
                                  f'{{"weight_map": {{tensor: shard file}}}}') from None
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise CheckpointError(f"{file}: weight_map names shard(s) missing from {path}: {', '.join(missing)}")
    found = [weights_summary(f) for f in files]
    tensors, size = sum(s["tensors"] for s in found), sum(s["bytes"] for s in found)
    return f"{file.name} ({found[0]['format']}, {tensors} tensors, {size / 1e6:,.1f} MB)"


def _format(s: dict) -> str:
    lines = [f"{k:<15} {v}" for k, v in s.items() if k != "parameters"]
    lines.append("parameters")
    lines += [f"  {k:<13} {v:>15,}  ({v / 1e6:,.2f}M)" for k, v in s["parameters"].items()]
    return "\n".join(lines)
