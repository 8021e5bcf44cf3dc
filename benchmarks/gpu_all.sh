#!/usr/bin/env bash
# The GPU machine's full check: kernel and CUDA-graph tests (marker gpu), per-kernel timings beside mamba_ssm,
# model parity with mamba_ssm, then `qmamba bench`. Logs and JSON go to $OUT (default /tmp/qmamba-gpu).
#   bash benchmarks/gpu_all.sh [tests|kernels|gemv|scan|step_in|step_out|decode_ssm|parity|bench|profile|profile_vqa|
#                               projector|attn_tiles|serve|multi ...]
#   (default: tests kernels parity bench)
# mamba_ssm / causal_conv1d wheels in .whl/ are installed to /tmp/site for the side-by-side figures only.
set -uo pipefail
OUT=${OUT:-/tmp/qmamba-gpu}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
steps=${*:-tests kernels parity bench}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/device.txt"
for step in $steps; do
  echo "=== $step"
  case $step in
    tests) # one line per test as it ends (-v), the slowest at the end; SIGINT at TESTS_S (keep it under the
           # machine's own limit): pytest stops and still prints its summary and failures (a plain kill prints none)
           timeout -s INT -k 20 ${TESTS_S:-360} python3 -m pytest -v -rfE --durations=15 --durations-min=2 -m gpu \
             -p no:cacheprovider ${TESTS_PATHS:-tests/models tests/ops tests/infer tests/train tests/bench} 2>&1 \
             | tee "$OUT/gpu_tests.log" ;;
    kernels) timeout ${KERNELS_S:-150} python3 benchmarks/kernels.py ${KERNELS_ARGS:-} --out "$OUT/kernels.json" 2>&1 | tee "$OUT/kernels.log" ;;
    gemv) timeout ${GEMV_S:-200} python3 benchmarks/gemv.py ${GEMV_ARGS:-} --out "$OUT/gemv.json" 2>&1 \
            | tee "$OUT/gemv.log" | grep -v "^  " | tail -12 ;;
    scan) timeout ${SCAN_S:-150} python3 benchmarks/scan_fwd.py --out "$OUT/scan_fwd.json" 2>&1 | tee "$OUT/scan_fwd.log" | tail -14 ;;
    step_in) timeout ${STEP_IN_S:-150} python3 benchmarks/step_in.py ${STEP_IN_ARGS:-} --out "$OUT/step_in.json" 2>&1 \
               | tee "$OUT/step_in.log" | tail -8 ;;
    step_out) timeout ${STEP_OUT_S:-100} python3 benchmarks/step_out.py --out "$OUT/step_out.json" 2>&1 \
                | tee "$OUT/step_out.log" | tail -6 ;;
    decode_ssm) timeout ${DECODE_SSM_S:-100} python3 benchmarks/decode_ssm.py --out "$OUT/decode_ssm.json" 2>&1 \
                  | tee "$OUT/decode_ssm.log" | tail -10 ;;
    parity) timeout ${PARITY_S:-180} python3 benchmarks/gpu_parity.py 2>&1 | tee "$OUT/parity.log" ;;  # row by row
    bench) timeout ${BENCH_S:-300} python3 -m qmamba bench ${BENCH_ARGS:-} --out "$OUT/bench.json" 2>&1 \
             | tee "$OUT/bench.log" | tail -60 ;;
    profile) for layer in mamba1 mamba2; do  # PROFILE_ARGS e.g. "--batch 16 --seqlen 64" for batch-16 decode
               timeout ${PROFILE_S:-150} python3 benchmarks/profile_lm.py --layer $layer ${PROFILE_ARGS:-} \
                 --out "$OUT" 2>&1 | tail -100
             done ;;
    profile_vqa) for scan in ${PROFILE_SCANS:-chunked sequential}; do  # the vision encoder and projector, by kernel
                   timeout ${PROFILE_S:-150} python3 benchmarks/profile_vqa.py --batch ${PROFILE_BATCH:-64} --scan $scan \
                     --rows 12 --out "$OUT/$scan" 2>&1 | tail -40
                 done ;;
    projector) # the Q-Mamba projector with each local-attention path (PROJECTOR_ARGS e.g. "--paths reference fused")
               timeout ${PROJECTOR_S:-300} python3 benchmarks/projector.py --preset ${PROJECTOR_PRESET:-qmamba-128} \
                 --batches 1 64 --train-batch 64 --repeats 10 ${PROJECTOR_ARGS:-} --out "$OUT/projector.json" 2>&1 \
                 | tee "$OUT/projector.log" | grep -v "^\[projector\]" | tail -30 ;;
    attn_tiles) timeout ${ATTN_TILES_S:-200} python3 benchmarks/local_attention_tiles.py --out "$OUT/local_attention_tiles.json" \
                  2>&1 | tee "$OUT/local_attention_tiles.log" | grep -v "^\[tiles\]" | tail -45 ;;
    serve) for preset in ${SERVE_PRESETS:-qmamba-128 cobra}; do  # the server under open-loop load (starlette, uvicorn)
             timeout ${SERVE_S:-200} python3 benchmarks/serve_load.py --preset $preset --duration 6 --out "$OUT" 2>&1 \
               | tee "$OUT/serve_$preset.log" | grep -E "^\||^at |^offline|^saturated|^check" | tail -25
           done ;;
    multi) timeout ${MULTI_S:-580} python3 benchmarks/multi_gpu.py --procs ${MULTI_PROCS:-1 2} ${MULTI_ARGS:---full qmamba-256} \
             --out "$OUT/multi" 2>&1 | tail -30 ;;  # several GPUs: torchrun scaling, resume, sharded eval
    *) echo "unknown step $step"; exit 2 ;;
  esac
done
