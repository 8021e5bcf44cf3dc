"""The one dispatch point for qmamba's ops.

Every op has a pure-PyTorch reference (``ref``) that runs anywhere. Faster implementations
(``triton``) register themselves here and are chosen for CUDA tensors when they import.
Nothing is chosen in a constructor: the choice is made per call, from

1. the innermost ``use_backend(...)`` context (tests and benchmarks force a backend with it),
2. the ``QMAMBA_BACKEND`` environment variable (``ref``, ``triton`` or ``auto``),
3. ``auto``: the fastest registered backend that supports the tensors' device.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from qmamba.errors import ConfigError

BACKENDS = ("ref", "triton")


@dataclass(frozen=True)
class _Impl:
    fn: Callable
    devices: tuple[str, ...]  # device types the implementation runs on


_REGISTRY: dict[str, dict[str, _Impl]] = {}
_OVERRIDE: contextvars.ContextVar[str | None] = contextvars.ContextVar("qmamba_backend", default=None)
_LOADED_OPTIONAL = False


def register(op: str, backend: str, fn: Callable, devices: tuple[str, ...] = ("cpu", "cuda")) -> None:
    """Register ``fn`` as the ``backend`` implementation of ``op``."""
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r} for op {op!r}; expected one of {BACKENDS}")
    _REGISTRY.setdefault(op, {})[backend] = _Impl(fn, devices)


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Force every op called inside the block onto backend ``name`` ('ref', 'triton' or 'auto')."""
    _check_name(name, "use_backend")
    token = _OVERRIDE.set(name)
    try:
        yield
    finally:
        _OVERRIDE.reset(token)


def triton_interpreted() -> bool:
    """Whether Triton kernels run in Triton's interpreter (TRITON_INTERPRET=1, as the CPU tests run them): no
    PDL or L2 prefetch there, and its tl.dot is wrong for bf16, so kernels take fp32 products."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def requested_backend() -> str:
    """The backend asked for by the context or the environment ('auto' if neither asks)."""
    name = _OVERRIDE.get() or os.environ.get("QMAMBA_BACKEND", "auto")
    _check_name(name, "QMAMBA_BACKEND")
    return name


def resolve(op: str, device_type: str) -> Callable:
    """The implementation of ``op`` to run on ``device_type`` under the current request."""
    _load_optional_backends()
    impls = _REGISTRY.get(op)
    if not impls:
        raise ConfigError(f"no implementation is registered for op {op!r}")
    name = requested_backend()
    if name == "auto":
        for candidate in reversed(BACKENDS):  # fastest first
            impl = impls.get(candidate)
            if impl is not None and device_type in impl.devices:
                return impl.fn
        raise ConfigError(f"op {op!r} has no implementation for device {device_type!r}")
    impl = impls.get(name)
    if impl is None or device_type not in impl.devices:
        have = sorted(k for k, v in impls.items() if device_type in v.devices)
        raise ConfigError(
            f"op {op!r} has no {name!r} implementation for device {device_type!r} "
            f"(available there: {have}); use backend 'auto' or 'ref'"
        )
    return impl.fn


def available(op: str) -> dict[str, tuple[str, ...]]:
    """Backends registered for ``op`` and the devices each supports."""
    _load_optional_backends()
    return {name: impl.devices for name, impl in _REGISTRY.get(op, {}).items()}


def _check_name(name: str, where: str) -> None:
    if name not in (*BACKENDS, "auto"):
        raise ConfigError(f"{where}={name!r} is not a backend; use one of {(*BACKENDS, 'auto')}")


def _load_optional_backends() -> None:
    """Import the Triton kernels once, when Triton and a CUDA GPU are both there."""
    global _LOADED_OPTIONAL
    if _LOADED_OPTIONAL:
        return
    _LOADED_OPTIONAL = True
    import importlib
    import importlib.util

    import torch

    if not torch.cuda.is_available() or importlib.util.find_spec("triton") is None:
        return
    if importlib.util.find_spec("qmamba.ops.runtime.triton_backend") is not None:
        importlib.import_module("qmamba.ops.runtime.triton_backend")
