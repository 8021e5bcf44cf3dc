"""Triton kernels compiled for sm_90 on any machine, in a subprocess (the tests' process runs Triton
interpreted), with Triton's bundled toolchain; nothing is launched. ``ptx`` gives the PTX; ``resources`` the
registers, stack and local memory a thread uses, read from the cubin by cuobjdump (spills show as stack or
local memory). ``KERNELS`` names the kernels the tests compile with their argument types.

``recording()`` records the launches Triton's interpreter is asked for (kernel, argument types, constexprs,
warps, stages, the 16-divisible arguments the JIT would mark) without running them, so the kernels a whole
forward and backward launches at full-size shapes can be compiled as the GPU would compile them
(``resources_of``: one subprocess for all).

    python tests/sm90.py MODULE KERNEL '{"types": {...}, "constexprs": {...}, "num_warps": 4}' [ptx|resources]
    python tests/sm90.py --many < JOBS.json     # JOBS [[MODULE, KERNEL, SPEC], ...]: resources of each, a list
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch


def _dtypes(dtype: str, *names: str) -> dict[str, str]:
    return {name: dtype for name in names}


# module:kernel and the argument types (bf16 activations and weights; other arguments i32) of the kernels the
# tests compile: the decode step's, and the sequential scan
KERNELS = {
    "gemv": ("qmamba.ops.gemv.tiled:_gemv_kernel",
             {**_dtypes("*bf16", "x_ptr", "w_ptr", "b_ptr", "y_ptr"), "acc_ptr": "*fp32", "cnt_ptr": "*i32"}),
    "step_in": ("qmamba.ops.step_in.fused:_step_in_kernel",
                {**_dtypes("*bf16", "h_ptr", "nw_ptr", "w_ptr", "b_ptr", "cs_ptr", "cw_ptr", "cb_ptr", "y_ptr",
                           "xw_ptr", "xo_ptr"),
                 **_dtypes("*fp32", "r_ptr", "ro_ptr"), "acc_ptr": "*i64", "cnt_ptr": "*i32", "eps": "fp32"}),
    "step_in_rows": ("qmamba.ops.step_in.fused_rows:_step_in_rows_kernel",
                     {**_dtypes("*bf16", "h_ptr", "nw_ptr", "w_ptr", "b_ptr", "cs_ptr", "cw_ptr", "cb_ptr", "y_ptr",
                                "xw_ptr", "xo_ptr"),
                      **_dtypes("*fp32", "r_ptr", "ro_ptr"), "acc_ptr": "*i64", "cnt_ptr": "*i32", "eps": "fp32"}),
    "step_out": ("qmamba.ops.step_out.fused:_step_out_kernel",
                 {**_dtypes("*bf16", "y_ptr", "z_ptr", "nw_ptr", "w_ptr", "b_ptr", "out_ptr"), "eps": "fp32"}),
    "mamba1_decode": ("qmamba.ops.state_update.mamba1_step:_mamba1_decode_kernel",
                      {**_dtypes("*bf16", "x", "dt_low", "dt_w", "dt_bias", "A_log", "B", "C", "D", "z", "out"),
                       "state": "*fp32"}),  # the only fp32 operand: a 32-bit load is the state's
    "mamba1_decode_rows": ("qmamba.ops.state_update.mamba1_step:_mamba1_decode_rows_kernel",
                           {**_dtypes("*bf16", "x", "dt_low", "dt_w", "dt_bias", "A_log", "B", "C", "D", "z", "out"),
                            "state": "*fp32"}),
    "sequential_scan": ("qmamba.ops.selective_scan.fused_recurrent:_sequential_fwd",
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


# ------------------------------------------------------------------------------------------- recording
_POINTER = {torch.bfloat16: "*bf16", torch.float16: "*fp16", torch.float32: "*fp32", torch.float64: "*fp64",
            torch.int64: "*i64", torch.int32: "*i32", torch.int16: "*i16", torch.int8: "*i8", torch.uint8: "*u8",
            torch.bool: "*i1"}


@dataclass(frozen=True)
class Launch:
    """One kernel launch as the JIT would specialise it: ``spec`` is what ``_compile`` takes."""
    kernel: str  # module:name
    spec: str  # JSON of {"types", "constexprs", "num_warps", "num_stages", "divisible"}

    @property
    def name(self) -> str:
        return self.kernel.split(":")[1]


def _encode(value):
    """A constexpr as JSON (Triton dtypes as {"tl": name})."""
    import triton.language as tl

    if isinstance(value, tl.dtype):
        return {"tl": value.name}
    if isinstance(value, tl.constexpr):
        return _encode(value.value)
    return value


def _launch(fn, args: tuple, kwargs: dict) -> Launch:
    params = inspect.signature(fn).parameters
    bound = dict(zip(params, args), **{k: v for k, v in kwargs.items() if k in params})
    types, constexprs, divisible = {}, {}, []
    for name, value in bound.items():
        if "constexpr" in str(params[name].annotation) or value is None or type(value) is int and value == 1:
            constexprs[name] = _encode(value)  # the JIT makes None and integer 1 constants too
        elif isinstance(value, torch.Tensor):
            types[name] = _POINTER[value.dtype]
            if value.data_ptr() % 16 == 0:
                divisible.append(name)
        elif isinstance(value, bool):
            types[name] = "i1"
        elif isinstance(value, int):
            types[name] = "i32" if -2**31 <= value < 2**31 else "i64"
            if value % 16 == 0:
                divisible.append(name)
        else:
            types[name] = "fp32"
    spec = {"types": types, "constexprs": constexprs, "num_warps": kwargs.get("num_warps", 4),
            "num_stages": kwargs.get("num_stages", 3), "divisible": divisible}
    return Launch(f"{fn.__module__}:{fn.__name__}", json.dumps(spec, sort_keys=True))


@contextlib.contextmanager
def recording() -> Iterator[list[Launch]]:
    """Inside the block, Triton launches (interpreted or compiled) are recorded in the yielded list, not run: their
    outputs stay as allocated. Each distinct launch once, in order."""
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    launches: list[Launch] = []

    def record(self, *args, grid, warmup, **kwargs):
        launch = _launch(self.fn, args, kwargs)
        if not warmup and launch not in launches:
            launches.append(launch)

    # the interpreter's launches (CPU machines) and the JIT's (a GPU machine, where kernels are not interpreted)
    originals = {cls: cls.run for cls in (InterpretedFunction, JITFunction)}
    for cls in originals:
        cls.run = record
    try:
        yield launches
    finally:
        for cls, run in originals.items():
            cls.run = run


@contextlib.contextmanager
def triton_on_cpu() -> Iterator[None]:
    """Inside the block every op runs its Triton implementation on CPU tensors too (with ``recording``: the
    launches a model makes on the GPU, made by a CPU model)."""
    import dataclasses

    import qmamba.ops.runtime.triton_backend  # noqa: F401 (registers the kernels)
    from qmamba.ops import backend

    saved = {op: impls["triton"] for op, impls in backend._REGISTRY.items() if "triton" in impls}
    for op, impl in saved.items():
        backend._REGISTRY[op]["triton"] = dataclasses.replace(impl, devices=(*impl.devices, "cpu"))
    try:
        with backend.use_backend("triton"):
            yield
    finally:
        for op, impl in saved.items():
            backend._REGISTRY[op]["triton"] = impl


def resources_of(launches: list[Launch]) -> list[dict[str, int]]:
    """``resources`` of each recorded launch, compiled in one subprocess."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    jobs = json.dumps([[*launch.kernel.split(":"), json.loads(launch.spec)] for launch in launches])
    done = subprocess.run([sys.executable, __file__, "--many"], input=jobs, env=env, capture_output=True, text=True,
                          timeout=1200)
    if done.returncode == 3:
        pytest.skip(f"Triton cannot compile for sm_90 here: {done.stderr.strip()[-300:]}")
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


# ------------------------------------------------------------------------------------------- compiling
def _decode(value):
    import triton.language as tl

    return tl.dtype(value["tl"]) if isinstance(value, dict) and "tl" in value else value


def _compile(module: str, name: str, spec: dict):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    kernel = getattr(importlib.import_module(module), name)
    constexprs, types = {k: _decode(v) for k, v in spec["constexprs"].items()}, spec["types"]
    names = list(inspect.signature(kernel.fn).parameters)
    signature = {arg: "constexpr" if arg in constexprs else types.get(arg, "i32") for arg in names}
    attrs = {(names.index(arg),): [["tt.divisibility", 16]] for arg in spec.get("divisible", ())}
    return triton.compile(ASTSource(fn=kernel, signature=signature, constexprs=constexprs, attrs=attrs),
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
        if sys.argv[1] == "--many":
            print(json.dumps([_resources(_compile(*job)) for job in json.loads(sys.stdin.read())]))
        else:
            compiled = _compile(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]))
            print(json.dumps(_resources(compiled)) if sys.argv[4:] == ["resources"] else compiled.asm["ptx"])
    except (RuntimeError, FileNotFoundError, subprocess.CalledProcessError) as e:  # the toolchain, not the kernel
        print(e, file=sys.stderr)
        sys.exit(3)
