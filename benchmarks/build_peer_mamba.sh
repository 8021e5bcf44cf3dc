#!/usr/bin/env bash
# On a GPU machine with nvcc (offline): build ML-Mamba's mamba_ssm fork and its bundled causal-conv1d into one
# install folder, for benchmarks/peer_parity_mlmamba.py --mlmamba-site.
#
#   bash benchmarks/build_peer_mamba.sh [SITE]          SITE defaults to /tmp/mlm-site
#   setsid bash benchmarks/build_peer_mamba.sh & ...    runs in the background while the GPU does other work
#
# Sources (git-ignored, unpacked from the pinned commits): .whl/mlmamba-mamba-src (WenjunHuang94/mamba, a fork of
# mamba_ssm 2.0.4 with Bidirectional_Mamba) and .whl/mlmamba-src/causal-conv1d-main (causal-conv1d 1.2.0.post2,
# shipped inside ML-Mamba's repository: the fork's Mamba-2 kernels call its 7-argument causal_conv1d_fwd).
# Both are built from copies under $BUILD; the sources stay as the peers published them.
#
# What is compiled (sm_90 only): selective_scan_cuda, 10 files (selective_scan.cpp, fwd fp32/fp16/bf16, bwd
# {fp32,fp16,bf16} x {real,complex}); causal_conv1d_cuda, 4 files (causal_conv1d.cpp, fwd, bwd, update). ML-Mamba
# never calls selective_scan_cuda (its LM and connector are Mamba-2: Triton kernels + causal_conv1d), but
# mamba_ssm/__init__ imports it; setup.py gives no switch to build a subset, so all of it is built.
# ninja runs the files in parallel (MAX_JOBS), so the build takes about as long as its slowest file, one of the
# complex backward scans: a few minutes for one architecture (estimate, not measured).
#
# Logs: $LOG_DIR/build_selective_scan.log, build_causal_conv1d.log (LOG_DIR: $OUT if set, else $SITE.logs).
# Exit 0 and $SITE/.mlm-build-ok when the fork and its extension are installed; a causal-conv1d failure falls back
# to a carried causal_conv1d-1.7.0 wheel if one is in .whl/mlm-wheels (the parity script adapts its API).
set -u -o pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SITE=${1:-${MLM_SITE:-/tmp/mlm-site}}
SRC=${MLM_MAMBA_SRC:-$ROOT/.whl/mlmamba-mamba-src}
CONV_SRC=${MLM_CONV_SRC:-$ROOT/.whl/mlmamba-src/causal-conv1d-main}
BUILD=${MLM_BUILD:-/tmp/mlm-build}
LOG_DIR=${LOG_DIR:-${OUT:-$SITE.logs}}
PY=${PYTHON:-python3}
mkdir -p "$SITE" "$LOG_DIR" "$BUILD"
STATUS=$LOG_DIR/build_peer_mamba.status

fail() { echo "build_peer_mamba: FAILED: $*" | tee "$STATUS" >&2; exit 1; }

if [ -f "$SITE/.mlm-build-ok" ]; then echo "build_peer_mamba: already built in $SITE" | tee "$STATUS"; exit 0; fi
[ -f "$SRC/setup.py" ] || fail "no $SRC/setup.py: unpack WenjunHuang94/mamba@8c1311f there (see peer_parity_mlmamba.py)"
[ -f "$CONV_SRC/setup.py" ] || fail "no $CONV_SRC/setup.py: unpack WenjunHuang94/ML-Mamba@5fdff98 into .whl/mlmamba-src"
command -v nvcc >/dev/null || [ -x "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc" ] || fail "nvcc not found (CUDA_HOME unset?)"
"$PY" -c "import torch, setuptools, ninja" 2>/dev/null || fail "$PY lacks torch, setuptools or ninja"
echo "build_peer_mamba: started $(date -u +%FT%TZ) -> $SITE (logs in $LOG_DIR)" | tee "$STATUS"

export TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=${MAX_JOBS:-16}
export MAMBA_FORCE_BUILD=TRUE CAUSAL_CONV1D_FORCE_BUILD=TRUE   # never try the prebuilt-wheel download
export PIP_NO_INDEX=1 PIP_NO_BUILD_ISOLATION=1

# Build-time patches of the copies (each: why)
patch_setup() {  # $1: setup.py
  # 1. The gencode list is hard-coded (sm_53..sm_87 + sm_90) and ignores TORCH_CUDA_ARCH_LIST; nvcc 13 has
  #    dropped sm_53..sm_72, so the unpatched list cannot compile. Keep sm_90 only (the H100).
  # 2. `from wheel.bdist_wheel import ...`: only needed for the bdist_wheel download shortcut; tolerate its absence.
  "$PY" - "$1" <<'EOF'
import re, sys
p = sys.argv[1]
s = open(p).read()
s = re.sub(r'cc_flag\.append\("arch=compute_\d+,code=sm_\d+"\)', 'pass', s)
s = re.sub(r'cc_flag\.append\("-gencode"\)', 'pass', s)
s = s.replace("cc_flag = []", 'cc_flag = ["-gencode", "arch=compute_90,code=sm_90"]', 1)
s = s.replace("from wheel.bdist_wheel import bdist_wheel as _bdist_wheel",
              "try:\n    from wheel.bdist_wheel import bdist_wheel as _bdist_wheel\n"
              "except ImportError:\n    from setuptools.command.bdist_wheel import bdist_wheel as _bdist_wheel")
open(p, "w").write(s)
assert "arch=compute_90,code=sm_90" in s and "compute_53" not in s, "gencode patch did not apply"
EOF
}

build_selective_scan() {
  local dir=$BUILD/mamba
  rm -rf "$dir" && cp -r "$SRC" "$dir" || return 1
  patch_setup "$dir/setup.py" || return 1
  # 3. CUDA 13's CCCL 3 removed cub::LaneId() and cub::CTA_SYNC(); upstream mamba made the same replacement
  #    (state-spaces/mamba d49d7c9). 4. `typename` before dependent Ktraits::Block*T(...) casts, as
  #    upstream 2.3 has it (stricter compilers reject the bare form).
  sed -i -e 's/cub::LaneId()/(threadIdx.x \& 0x1f)/' -e 's/cub::CTA_SYNC()/__syncthreads()/g' \
      "$dir/csrc/selective_scan/reverse_scan.cuh"
  sed -i -E 's/([^e] )Ktraits::(Block[A-Za-z]*T)\(/\1typename Ktraits::\2(/' "$dir"/csrc/selective_scan/*.h \
      "$dir"/csrc/selective_scan/selective_scan_*_kernel.cuh
  (cd "$dir" && "$PY" setup.py build_ext --inplace) || return 1
  ls "$dir"/selective_scan_cuda*.so >/dev/null 2>&1 || return 1
  rm -rf "$SITE/mamba_ssm" && cp -r "$dir/mamba_ssm" "$SITE/" && cp "$dir"/selective_scan_cuda*.so "$SITE/"
}

build_causal_conv1d() {
  local dir=$BUILD/causal-conv1d
  rm -rf "$dir" && cp -r "$CONV_SRC" "$dir" || return 1
  patch_setup "$dir/setup.py" || return 1
  (cd "$dir" && "$PY" setup.py build_ext --inplace) || return 1
  ls "$dir"/causal_conv1d_cuda*.so >/dev/null 2>&1 || return 1
  rm -rf "$SITE/causal_conv1d" && cp -r "$dir/causal_conv1d" "$SITE/" && cp "$dir"/causal_conv1d_cuda*.so "$SITE/"
}

t0=$(date +%s)
build_causal_conv1d >"$LOG_DIR/build_causal_conv1d.log" 2>&1 &
conv_pid=$!
build_selective_scan >"$LOG_DIR/build_selective_scan.log" 2>&1
scan_rc=$?
wait $conv_pid
conv_rc=$?
echo "build_peer_mamba: selective_scan rc=$scan_rc causal_conv1d rc=$conv_rc after $(( $(date +%s) - t0 )) s" | tee -a "$STATUS"
if [ $conv_rc -ne 0 ]; then
  wheel=$(ls "$ROOT"/.whl/mlm-wheels/causal_conv1d-1.7.0-*.whl 2>/dev/null | head -1)
  tail -n 30 "$LOG_DIR/build_causal_conv1d.log" >&2
  [ -n "$wheel" ] || fail "causal-conv1d 1.2.0 did not build (see $LOG_DIR/build_causal_conv1d.log) and no fallback wheel"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$wheel" \
    || fail "causal-conv1d fallback wheel did not install"
  echo "build_peer_mamba: causal-conv1d 1.2.0 failed; installed $(basename "$wheel") instead" | tee -a "$STATUS"
fi
if [ $scan_rc -ne 0 ]; then
  tail -n 40 "$LOG_DIR/build_selective_scan.log" >&2
  fail "the fork's selective_scan_cuda did not build (see $LOG_DIR/build_selective_scan.log); ML-Mamba never calls it: \
rerun the parity with --stub-selective-scan after copying the fork's Python package: cp -r $SRC/mamba_ssm $SITE/"
fi
[ -f "$SRC/PEER_COMMIT" ] && cp "$SRC/PEER_COMMIT" "$SITE/PEER_COMMIT"
date -u +%FT%TZ >"$SITE/.mlm-build-ok"
echo "build_peer_mamba: OK in $(( $(date +%s) - t0 )) s" | tee -a "$STATUS"
