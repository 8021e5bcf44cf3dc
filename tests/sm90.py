"""Triton kernels compiled for sm_90 on any machine, in a subprocess (the tests' process runs Triton
interpreted), with Triton's bundled toolchain; nothing is launched. ``ptx`` gives the PTX; ``resources`` the
registers, stack and local memory a thread uses, read from the cubin by cuobjdump (spills show as stack or
local memory). ``KERNELS`` names the kernels the tests compile with their argument types.

    python tests/sm90.py MODULE KERNEL '{"types": {...}, "constexprs": {...}, "num_warps": 4}' [ptx|resources]
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest


def _dtypes(dtype: str, *names: str) -> dict[str, str]:
    return {name: dtype for name in names}


# module:kernel and the argument types (bf16 activations and weights; other arguments i32) of the kernels the
# tests compile: the decode step's, and the sequential scan
KERNELS = {
    "gemv": ("qmamba.ops.gemv.triton:_gemv_kernel",
             {**_dtypes("*bf16", "x_ptr", "w_ptr", "b_ptr", "y_ptr"), "acc_ptr": "*fp32", "cnt_ptr": "*i32"}),
    "step_in": ("qmamba.ops.step_in.triton:_step_in_kernel",
                {**_dtypes("*bf16", "h_ptr", "nw_ptr", "w_ptr", "b_ptr", "cs_ptr", "cw_ptr", "cb_ptr", "y_ptr",
                           "xw_ptr", "xo_ptr"),
                 **_dtypes("*fp32", "r_ptr", "ro_ptr", "acc_ptr"), "cnt_ptr": "*i32", "eps": "fp32"}),
    "mamba1_decode": ("qmamba.ops.state_update.triton_mamba1:_mamba1_decode_kernel",
                      {**_dtypes("*bf16", "x", "dt_low", "dt_w", "dt_bias", "A_log", "B", "C", "D", "z", "out"),
                       "state": "*fp32"}),  # the only fp32 operand: a 32-bit load is the state's
    "sequential_scan": ("qmamba.ops.selective_scan.triton_sequential:_sequential_fwd",
                        {**_dtypes("*bf16", "u_ptr", "dl_ptr", "B_ptr", "C_ptr", "z_ptr", "out_ptr"),
                         **_dtypes("*fp32", "bias_ptr", "A_ptr", "D_ptr", "h0_ptr", "last_ptr")}),
}


def _run(kernel: str, types: dict, constexprs: dict, num_warps: int, what: str, num_stages: int = 3) -> str:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    spec = json.dumps({"types": types, "constexprs": constexprs, "num_warps": num_warps, "num_stages": num_stages})
    done = subprocess.run([sys.executable, __file__, *kernel.split(":"), spec, what], env=env, capture_output=True,
                          text=True, timeout=300)
    if done.returncode == 3:  # no bundled ptxas / LLVM / cuobjdump for this platform
        pytest.skip(f"Triton cannot compile for sm_90 here: {done.stderr.strip()[-300:]}")
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def ptx(kernel: str, types: dict, constexprs: dict, num_warps: int = 4) -> str:
    """PTX of ``module:kernel`` for sm_90."""
    return _run(kernel, types, constexprs, num_warps, "ptx")


def resources(kernel: str, types: dict, constexprs: dict, num_warps: int = 4, num_stages: int = 3) -> dict[str, int]:
    """{"REG": registers, "STACK": bytes, "LOCAL": bytes, "SHARED": bytes} a thread / block of ``module:kernel``
    compiled for sm_90."""
    return json.loads(_run(kernel, types, constexprs, num_warps, "resources", num_stages))


def _compile(module: str, name: str, spec: dict):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    kernel = getattr(importlib.import_module(module), name)
    constexprs, types = spec["constexprs"], spec["types"]
    names = list(inspect.signature(kernel.fn).parameters)
    signature = {arg: "constexpr" if arg in constexprs else types.get(arg, "i32") for arg in names}
    return triton.compile(ASTSource(fn=kernel, signature=signature, constexprs=constexprs),
                          target=GPUTarget("cuda", 90, 32),
                          options={"num_warps": spec.get("num_warps", 4), "num_stages": spec.get("num_stages", 3)})


def _resources(compiled) -> dict[str, int]:
    import triton

    cuobjdump = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    if not cuobjdump.is_file():
        raise FileNotFoundError(f"no cuobjdump at {cuobjdump}")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(compiled.asm["cubin"])
        f.flush()
        out = subprocess.run([str(cuobjdump), "-res-usage", f.name], capture_output=True, text=True, check=True).stdout
    line = next(line for line in out.splitlines() if "REG:" in line)
    return {k: int(v) for k, v in re.findall(r"(REG|STACK|SHARED|LOCAL):(\d+)", line)}


if __name__ == "__main__":
    try:
        compiled = _compile(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]))
        print(json.dumps(_resources(compiled)) if sys.argv[4:] == ["resources"] else compiled.asm["ptx"])
    except (RuntimeError, FileNotFoundError, subprocess.CalledProcessError) as e:  # the toolchain, not the kernel
        print(e, file=sys.stderr)
        sys.exit(3)
