#!/usr/bin/env bash
# qmamba bench on this tree and on another tree's src/ in one call on one GPU machine, then the gpu tests with the
# time left: the same figures measured side by side, for a change that must not move them.
#   here:  git archive <commit> src | tar -x -C .old   (.old is git-ignored; carry it with the call)
#   there: BUDGET=560 bash benchmarks/bench_two_trees.sh [.old/src]
# SECTIONS, REPEATS, PEERS (e.g. mamba_ssm: its wheels in .whl/ are installed to /tmp/site), NEW_S / OLD_S (each
# bench's limit, s) and TESTS_PATHS may be set; logs and JSON go to $OUT.
set -uo pipefail
export PYTHONUNBUFFERED=1
OLD_SRC=${1:-.old/src}
OUT=${OUT:-/tmp/qmamba-gpu}; mkdir -p "$OUT"
T0=$(date +%s); BUDGET=${BUDGET:-560}
SITE=""
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && SITE=/tmp/site
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/device.txt"
bench() {  # bench NAME SRC LIMIT
  local t; t=$(date +%s)
  PYTHONPATH=$2${SITE:+:$SITE} timeout "$3" python3 -m qmamba bench --only "${SECTIONS:-lm-mamba1,lm-mamba2,vqa}" \
    --repeats "${REPEATS:-3}" --peers "${PEERS:-}" --out "$OUT/bench_$1.json" > "$OUT/bench_$1.log" 2>&1
  echo "$1: rc=$? $(( $(date +%s) - t )) s"
}
bench new "$PWD/src" "${NEW_S:-190}"
bench old "$PWD/$OLD_SRC" "${OLD_S:-170}"
left=$(( BUDGET - ($(date +%s) - T0) - 25 ))
if [ "$left" -gt 30 ]; then
  echo "gpu tests: $left s"
  OUT=$OUT TESTS_S=$left TESTS_PATHS="${TESTS_PATHS:-tests/models tests/infer tests/bench tests/ops tests/train}" \
    bash benchmarks/gpu_all.sh tests > "$OUT/tests_wrap.log" 2>&1
  echo "=== tests"; grep -E "passed|failed|FAILED|ERROR" "$OUT/gpu_tests.log" | tail -25
fi
for name in new old; do
  echo "=== $name"; grep -v "it/s\]\|^$" "$OUT/bench_$name.log" | cut -c1-150 | tail -34
done
