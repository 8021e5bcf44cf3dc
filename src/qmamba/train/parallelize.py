"""The only file that knows about FSDP: activation checkpointing and FSDP2 sharding of a multimodal
model, applied from outside the model code in a fixed order (checkpointing, then sharding).

FSDP2 units: each LLM block, each connector block, the connector, the frozen vision encoder, and the
root (embedding, final norm, head — tied weights stay in one unit).
"""

from __future__ import annotations

import functools
import warnings

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from qmamba.train.distributed import DistEnv


def _blocks(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks worth checkpointing / sharding one by one."""
    blocks = list(model.llm.backbone.layers)
    blocks += list(getattr(model.connector, "blocks", []))
    return blocks


def apply_activation_checkpointing(model: nn.Module) -> int:
    """Recompute each block's activations in the backward pass instead of keeping them; returns the count."""
    blocks = _blocks(model)
    for block in blocks:
        forward = block.forward

        @functools.wraps(forward)
        def checkpointed(*args, _forward=forward, **kwargs):
            if not torch.is_grad_enabled():
                return _forward(*args, **kwargs)
            return checkpoint(_forward, *args, use_reentrant=False, **kwargs)

        block.forward = checkpointed
    return len(blocks)


def apply_fsdp(model: nn.Module, env: DistEnv, bf16: bool) -> nn.Module:
    """Shard ``model`` over all ranks with FSDP2 (``fully_shard``)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    # FSDP2 warns when a unit returns a view, since an in-place op on it would skip the unit's pre-backward
    # all-gather. qmamba's units return views (a 3-D linear's output) but nothing modifies them in place
    # (the residual add-norm and the splice of the visual tokens are out of place; tests/train/test_fsdp.py
    # checks every gradient against one process).
    warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module \(.*\) returned a view tensor")
    mesh = init_device_mesh(env.device.type, (env.world_size,))
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else None
    kwargs = {"mesh": mesh, **({"mp_policy": mp} if mp is not None else {})}
    for block in _blocks(model):
        fully_shard(block, **kwargs)
    fully_shard(model.connector, **kwargs)
    fully_shard(model.vision, **kwargs)
    fully_shard(model, **kwargs)
    return model
