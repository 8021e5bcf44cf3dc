#!/usr/bin/env bash
# The replication's small tier on one GPU machine, in steps that share the machine's disk between calls:
#   bash benchmarks/small_tier.sh build_bg tests wait_build       # backbones built beside the gpu tests
#   bash benchmarks/small_tier.sh build replicate                 # or one after the other
# build: `qmamba micro build --size small --device cuda` into $QMAMBA_CACHE (default runs/cache) unless built;
# build_bg starts it in its own process session (it outlives the call) and wait_build waits for it (BUILD_WAIT_S).
# bench: `qmamba bench --only vqa --presets all` (full-size random weights: each system's time per answer) into
# runs/bench_vqa.json and $OUT, once: replicate puts its times beside Table 1 (a later machine takes the file carried).
# lm_graph: the GPU tests of the graphed micro training steps, then benchmarks/micro_lm_step.py (eager against
# graphed); exits non-zero when a test fails (`lm_graph && G=true` picks the recipes' cuda_graph).
# recall_probe: benchmarks/micro_recall_probe.py (qmamba beside mamba_ssm when installed; PROBE_ARGS, default gaps
# 0,8,32,128 for up to 3,000 steps each).
# lm_sweep_bg: benchmarks/micro_lm_sweep.py --out runs/lm-sweep "$LM_SWEEP" (JSON {name: {LMTrainConfig field: value,
# "lm": {shape fields}, "world": {world settings}}})
# in its own process session; lm_sweep: its table so far and its log's tail (a later call; finished recipes are kept).
# replicate: `qmamba replicate --tier small` with EXPERIMENTS, PRESETS, SEEDS, JOBS (defaults table1, qmamba-256,
# 1, 4 processes) for REP_S seconds at most; a second call resumes it. Logs, build.json, the report and the runs' records
# (rep-small-records.tgz) go to $OUT.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export QMAMBA_CACHE=${QMAMBA_CACHE:-$PWD/runs/cache}
OUT=${OUT:-/tmp/qmamba-gpu}; mkdir -p "$OUT" runs
BUILT=$QMAMBA_CACHE/micro-small/build.json
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/device.txt"
build_cmd() { python3 -m qmamba micro build --size small --device cuda --quiet ${BUILD_ARGS:-}; }
show_build() {
  tail -30 runs/build.log
  [ -f "$BUILT" ] && cp "$BUILT" "$OUT/build.json" && python3 -c "
import json; r = json.load(open('$BUILT'))
print('gates:', json.dumps(r.get('gates'), indent=1)); print('seconds:', json.dumps(r.get('seconds', r.get('times'))))"
}
for step in ${*:-build replicate}; do
  echo "=== $step $(date +%T)"
  case $step in
    build) if [ -f "$BUILT" ]; then echo "built already"; else
             timeout ${BUILD_S:-580} bash -c "$(declare -f build_cmd); build_cmd" > runs/build.log 2>&1
             echo "build rc=$?"; fi; show_build; cp runs/build.log "$OUT/" ;;
    build_bg) if [ -f "$BUILT" ] || [ -f runs/build.pid ]; then echo "built or building"; else
                setsid nohup bash -c "$(declare -f build_cmd); build_cmd; echo \"build rc=\$?\"" \
                  > runs/build.log 2>&1 < /dev/null & echo $! > runs/build.pid; fi ;;
    wait_build) t=$(date +%s)
                while kill -0 "$(cat runs/build.pid 2>/dev/null)" 2>/dev/null \
                      && [ $(( $(date +%s) - t )) -lt ${BUILD_WAIT_S:-300} ]; do sleep 5; done
                show_build; cp runs/build.log "$OUT/" ;;
    tests) OUT=$OUT TESTS_S=${TESTS_S:-360} bash benchmarks/gpu_all.sh tests > "$OUT/tests_wrap.log" 2>&1
           grep -E "passed|failed|FAILED|ERROR" "$OUT/gpu_tests.log" | tail -25 ;;
    lm_graph) python3 -m pytest -q -m gpu tests/micro tests/train/test_graphed_step.py -p no:cacheprovider \
                > "$OUT/lm_graph_tests.log" 2>&1; rc=$?; tail -3 "$OUT/lm_graph_tests.log"
              python3 benchmarks/micro_lm_step.py --out "$OUT" 2>&1 | tail -8; [ $rc = 0 ] || exit $rc ;;
    recall_probe) python3 benchmarks/micro_recall_probe.py ${PROBE_ARGS:---gaps 0,8,32,128 --steps 3000} --out "$OUT" ;;
    lm_sweep_bg) setsid nohup python3 benchmarks/micro_lm_sweep.py --out runs/lm-sweep --jobs "${LM_SWEEP_JOBS:-4}" \
                   "${LM_SWEEP:?set LM_SWEEP to a JSON object of recipes}" > runs/lm_sweep.log 2>&1 < /dev/null & ;;
    lm_sweep) tail -5 runs/lm_sweep.log; python3 benchmarks/micro_lm_sweep.py --out runs/lm-sweep --report \
                | tee "$OUT/lm_sweep.md"
              for f in runs/lm-sweep/*/result.json; do [ -f "$f" ] && cp "$f" "$OUT/lm_sweep_$(basename "$(dirname "$f")").json"; done ;;
    bench) [ -f runs/bench_vqa.json ] || timeout ${BENCH_S:-420} python3 -m qmamba bench --only vqa --presets all \
             --repeats 5 --out runs/bench_vqa.json > "$OUT/bench_vqa.log" 2>&1
           cp runs/bench_vqa.json "$OUT/" 2>/dev/null; grep -v "^\[" "$OUT/bench_vqa.log" | tail -25 ;;
    replicate) [ -f runs/bench_vqa.json ] && REP_ARGS="--bench-json runs/bench_vqa.json ${REP_ARGS:-}"
               timeout -s INT -k 30 ${REP_S:-400} python3 -m qmamba replicate --tier small --out runs/rep-small \
                 --experiments "${EXPERIMENTS:-table1}" --presets "${PRESETS:-qmamba-256}" --seeds "${SEEDS:-1}" \
                 --jobs "${JOBS:-4}" ${REP_ARGS:-} > "$OUT/replicate.log" 2>&1
               echo "replicate rc=$?"; grep -v "it/s\]" "$OUT/replicate.log" | tail -30
               cp runs/rep-small/report.md runs/rep-small/report.json "$OUT/" 2>/dev/null
               # the records alone (no weights): extracted into runs/ and carried, a later machine resumes from them
               (cd runs && find rep-small -name result.json -o -name scores.json -o -name tier.json \
                  -o -name replicate_world.json | tar czf "$OUT/rep-small-records.tgz" -T -) ;;
    *) echo "unknown step $step"; exit 2 ;;
  esac
done
