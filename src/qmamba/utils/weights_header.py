"""What a weights file holds, read from its header without loading a tensor: for ``qmamba info``, which builds
the model from its config alone and would otherwise count parameters of weights that cannot load.

A safetensors file is an 8-byte little-endian header length, a JSON header ``{name: {"dtype", "shape",
"data_offsets": [begin, end]}}`` and the data; a torch ``.bin`` is a zip of a pickle and one record per
tensor, opened here memory-mapped with ``weights_only=True`` (the check ``from_pretrained`` makes)."""

from __future__ import annotations

import json
import math
import struct
import zipfile
from pathlib import Path

from qmamba.errors import CheckpointError

DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
               "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8}
REFETCH = "copy or download the file again"


def weights_summary(file: Path) -> dict:
    """{"file", "format", "tensors", "bytes"} of one weights file (``.safetensors`` or a torch ``.bin``);
    raises ``CheckpointError`` naming the file, the field at fault and the fix."""
    if file.suffix == ".safetensors":
        return {"file": str(file), "format": "safetensors", **_safetensors(file)}
    return {"file": str(file), "format": "torch", **_torch_bin(file)}


def _safetensors(file: Path) -> dict:
    size = file.stat().st_size
    with open(file, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{file}: {size} bytes, too short for a safetensors header: the file is "
                                  f"truncated; {REFETCH}")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            raise CheckpointError(f"{file}: the header length field says {n} bytes but the file has {size - 8} "
                                  f"after it: the file is truncated (or not safetensors); {REFETCH}")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{file}: the header is not JSON ({e}): the file is damaged; {REFETCH}") from None
    data = size - 8 - n
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    for name, t in tensors.items():
        begin, end = t["data_offsets"]
        if end > data:
            raise CheckpointError(f"{file}: tensor {name!r} data_offsets end at byte {end} of the data but the file "
                                  f"holds {data} bytes of data: the file is truncated; {REFETCH}")
        want = math.prod(t["shape"]) * DTYPE_BYTES.get(t["dtype"], 0)
        if t["dtype"] in DTYPE_BYTES and end - begin != want:
            raise CheckpointError(f"{file}: tensor {name!r} (shape {t['shape']}, dtype {t['dtype']}) needs {want} "
                                  f"bytes but its data_offsets span {end - begin}: the file is damaged; {REFETCH}")
    return {"tensors": len(tensors), "bytes": size}


def _torch_bin(file: Path) -> dict:
    import pickle
    import re

    import torch

    size = file.stat().st_size
    zipped = zipfile.is_zipfile(file)
    try:  # a zip is opened memory-mapped (nothing is read but the pickle); a legacy file is read whole
        state = torch.load(file, map_location="cpu", weights_only=True, mmap=zipped)
    except pickle.UnpicklingError as e:
        named = re.search(r"(?:GLOBAL|global:?) ([\w.]+)", str(e))
        found = f"the global {named[1]}" if named else "objects other than tensors"
        raise CheckpointError(f"{file}: its pickle asks for {found}, which loading with weights_only=True refuses "
                              f"(a file of weights holds tensors only): convert a trusted copy to "
                              f"model.safetensors, or take the weights from their source again") from None
    except Exception as e:  # torch.load fails in many ways on a damaged file (EOFError, IndexError, RuntimeError...)
        hint = "the file is truncated" if not zipped else "the file is damaged"
        first = next(iter(str(e).splitlines()), "")[:200]
        raise CheckpointError(f"{file}: cannot read it as torch weights ({type(e).__name__}: {first}): {hint}; "
                              f"{REFETCH}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{file}: holds a {type(state).__name__}, not a dict of tensors (a state_dict): "
                              f"save model.state_dict()")
    return {"tensors": len(state), "bytes": size}
