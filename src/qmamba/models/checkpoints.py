"""Reading and writing weights: safetensors, torch ``.bin`` (weights only), sharded indexes,
and a strict loader whose errors name every missing, unexpected or mis-shaped tensor."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor, nn

from qmamba.errors import CheckpointError

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


def require_dir(path: str | Path, what: str) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointError(f"{what}: directory {path} does not exist (qmamba loads local directories only; "
                              f"download the checkpoint first)")
    if not path.is_dir():
        raise CheckpointError(f"{what}: {path} is a file; pass the directory that holds config.json and the weights")
    return path


def find_weights(path: Path, what: str) -> Path:
    """The weights file (or shard index) in ``path``, preferring safetensors."""
    for name in WEIGHT_FILES:
        if (path / name).is_file():
            return path / name
    raise CheckpointError(f"{what}: no weights in {path}; expected one of {', '.join(WEIGHT_FILES)}")


def _load_one(file: Path) -> dict[str, Tensor]:
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(file), device="cpu")
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt, truncated, or a pickle with code in it
        raise CheckpointError(f"cannot read weights file {file}: {type(e).__name__}: {str(e)[:300]}") from None


def load_state_dict(path: Path, what: str) -> dict[str, Tensor]:
    """All tensors of the checkpoint in directory ``path`` (on CPU)."""
    file = find_weights(path, what)
    if not file.name.endswith(".index.json"):
        return _load_one(file)
    try:
        weight_map = json.loads(file.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError) as e:
        raise CheckpointError(f"{what}: shard index {file} is invalid ({e})") from None
    state: dict[str, Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        if not (path / shard).is_file():
            raise CheckpointError(f"{what}: shard {shard} listed in {file.name} is missing from {path}")
        state.update(_load_one(path / shard))
    return state


def save_state_dict(state: dict[str, Tensor], file: Path) -> None:
    """Write tensors to ``file`` (.safetensors or .bin) through a temporary file, so a crash leaves no half file."""
    tmp = file.with_name(file.name + ".tmp")
    state = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    if file.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(tmp), metadata={"format": "pt"})
    else:
        torch.save(state, tmp)
    tmp.replace(file)


def _summarise(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def load_into(module: nn.Module, state: dict[str, Tensor], where: str, optional: tuple[str, ...] = ()) -> None:
    """Copy ``state`` into ``module`` by name; any mismatch raises one ``CheckpointError`` listing it all.

    ``optional``: parameter names that may be absent (e.g. a tied ``lm_head.weight``).
    """
    own = module.state_dict()
    missing = [k for k in own if k not in state and k not in optional]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and state[k].shape != own[k].shape]
    problems = []
    if missing:
        problems.append(f"missing {_summarise(missing)}")
    if unexpected:
        problems.append(f"unexpected {_summarise(unexpected)}")
    if shapes:
        problems.append(f"shape mismatch {_summarise(shapes)}")
    if problems:
        raise CheckpointError(f"{where}: the weights do not fit the config: " + "; ".join(problems))
    module.load_state_dict({k: v for k, v in state.items()}, strict=False, assign=False)
