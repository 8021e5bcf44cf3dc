"""Reading and writing weights: safetensors, torch ``.bin`` (weights only), sharded indexes,
and a strict loader whose errors name every missing, unexpected or mis-shaped tensor.

Weights are written as transformers writes them: one ``model.safetensors`` up to ``max_shard_size``, past it
shards ``model-00001-of-0000N.safetensors`` named by ``model.safetensors.index.json``
(``{"metadata": {"total_size": bytes}, "weight_map": {tensor: shard}}``); ``.bin`` files the same way.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from torch import Tensor, nn

from qmamba.errors import CheckpointError, ConfigError

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
DEFAULT_MAX_SHARD_SIZE = "5GB"  # transformers' default
DEFAULT_MAX_NEW_TOKENS = 128  # the answer length qmamba's Pipeline uses when none is given
_SIZE_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
               "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16",
               torch.float64: "float64"}


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
    if file.suffix == ".safetensors":
        from qmamba.utils.weights_header import weights_summary

        try:  # a truncated or damaged file: one error naming it and what is wrong
            weights_summary(file)
        except CheckpointError as e:
            raise CheckpointError(f"cannot read weights file {file}: {str(e).removeprefix(f'{file}: ')}") from None
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
        tensors = _load_one(path / shard)
        absent = [k for k, v in weight_map.items() if v == shard and k not in tensors]
        if absent:
            raise CheckpointError(f"{what}: {file.name} puts {_summarise(absent)} in {shard}, which does not hold "
                                  f"them; the shard is from another save: copy the directory again")
        state.update(tensors)
    return state


def parse_size(size: int | str) -> int:
    """Bytes of ``size``: an int, or a string like "5GB" / "500MB" / "2GiB" (GB = 10**9, GiB = 2**30)."""
    if isinstance(size, int):
        return size
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?I?B)\s*", str(size).upper())
    if m is None:
        raise ConfigError(f"max_shard_size={size!r}; expected bytes or a size like '5GB', '500MB', '2GiB'")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2)])


def to_torch_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """A torch float dtype from a dtype or its name ('bfloat16', 'float32', ...); None stays None."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    by_name = {v: k for k, v in DTYPE_NAMES.items()}
    if dtype not in by_name:
        raise ConfigError(f"dtype={dtype!r}; expected one of {sorted(by_name)}")
    return by_name[dtype]


def cast_floats(state: dict[str, Tensor], dtype: torch.dtype | None,
                like: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
    """``state`` with its floating-point tensors in ``dtype``, or in the dtype of the same name in ``like`` (the
    state of the model built with ``dtype``, which keeps a few tensors such as ``A_log`` and ``D`` in fp32);
    integer buffers unchanged; ``dtype`` None: every tensor as it is."""
    if dtype is None:
        return dict(state)
    like = like or {}
    return {k: v.to(like[k].dtype if k in like else dtype) if v.is_floating_point() else v
            for k, v in state.items()}


def stored_dtype(state: dict[str, Tensor]) -> torch.dtype:
    """The floating-point dtype that holds most of ``state``'s elements (the dtype a model loads in by default)."""
    counts: dict[torch.dtype, int] = {}
    for v in state.values():
        if v.is_floating_point():
            counts[v.dtype] = counts.get(v.dtype, 0) + v.numel()
    return max(counts, key=counts.get) if counts else torch.get_default_dtype()


def save_weights(state: dict[str, Tensor], path: Path, max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
                 safe: bool = True) -> list[str]:
    """Write ``state`` into directory ``path``: one file up to ``max_shard_size`` bytes, else shards and an
    index, in ``state``'s order (a tensor larger than the limit gets a shard of its own). Weight files of an
    earlier save that this one does not write are removed afterwards, so a directory never keeps two versions.
    Returns the names of the files written."""
    stem, ext = ("model", ".safetensors") if safe else ("pytorch_model", ".bin")
    shards = _split(state, parse_size(max_shard_size))
    names = ([f"{stem}{ext}"] if len(shards) == 1 else
             [f"{stem}-{i + 1:05d}-of-{len(shards):05d}{ext}" for i in range(len(shards))])
    for name, shard in zip(names, shards):
        save_state_dict(shard, path / name)
    if len(shards) > 1:
        index = {"metadata": {"total_size": sum(_nbytes(v) for v in state.values())},
                 "weight_map": {k: name for name, shard in zip(names, shards) for k in shard}}
        tmp = path / f"{stem}{ext}.index.json.tmp"
        tmp.write_text(json.dumps(index, indent=2) + "\n")
        tmp.replace(path / f"{stem}{ext}.index.json")
        names.append(f"{stem}{ext}.index.json")
    _remove_stale(path, keep=set(names))
    return names


def _nbytes(t: Tensor) -> int:
    return t.numel() * t.element_size()


def _split(state: dict[str, Tensor], limit: int) -> list[dict[str, Tensor]]:
    """Consecutive groups of tensors of at most ``limit`` bytes each (one tensor alone may exceed it)."""
    shards: list[dict[str, Tensor]] = [{}]
    size = 0
    for k, v in state.items():
        if shards[-1] and size + _nbytes(v) > limit:
            shards.append({})
            size = 0
        shards[-1][k] = v
        size += _nbytes(v)
    return shards


def _remove_stale(path: Path, keep: set[str]) -> None:
    """Delete weight files and shard indexes in ``path`` other than ``keep`` (left by an earlier save)."""
    shard = re.compile(r"(model|pytorch_model)-\d{5}-of-\d{5}\.(safetensors|bin)")
    for f in path.iterdir():
        if f.name not in keep and (f.name in WEIGHT_FILES or shard.fullmatch(f.name)):
            f.unlink()


def generation_config(tokenizer, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, stop: str | None = None) -> dict:
    """generation_config.json: greedy answers of ``max_new_tokens`` and, with a tokenizer, the ids generation
    stops at and pads with: its eos, plus the end-of-turn marker ``stop`` where that is another single token."""
    out: dict = {"max_new_tokens": max_new_tokens, "do_sample": False}
    if tokenizer is None or tokenizer.eos_token_id is None:
        return out
    eos = [tokenizer.eos_token_id]
    stop_id = tokenizer.convert_tokens_to_ids(stop) if stop else None
    if stop_id not in (None, tokenizer.unk_token_id, *eos):
        eos.append(stop_id)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return {**out, "eos_token_id": eos[0] if len(eos) == 1 else eos, "pad_token_id": pad}


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
