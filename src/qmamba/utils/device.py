"""Device and dtype choices with sensible defaults: the GPU and bf16 when there is one, else CPU and fp32."""

from __future__ import annotations

import torch

from qmamba.errors import ConfigError

DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
          "fp16": torch.float16, "float16": torch.float16}
DEVICE_TYPES = ("cpu", "cuda")


def resolve_device(name: str | None = None) -> torch.device:
    """``name`` ("cpu", "cuda", "cuda:N", None or "auto" for the GPU if there is one) as a device that exists here;
    anything else raises ``ConfigError`` naming the devices there are."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in DEVICE_TYPES:
        raise ConfigError(f"device={name!r} is not a device qmamba runs on; use cpu, cuda or cuda:N "
                          f"(N the index of a GPU, {_gpus()})")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but no CUDA GPU is visible; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"device={name!r} but {_gpus()}; use cuda:0 ... cuda:{torch.cuda.device_count() - 1}")
    return device


def _gpus() -> str:
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return f"{count} GPU(s) visible here" if count else "no GPU visible here"


def resolve_dtype(name: str | None, device: torch.device) -> torch.dtype:
    if name in (None, "auto"):
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name not in DTYPES:
        raise ConfigError(f"dtype={name!r}; expected one of {sorted(DTYPES)}")
    return DTYPES[name]
