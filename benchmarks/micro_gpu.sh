#!/usr/bin/env bash
# The micro-world on a GPU: optionally rebuild the micro backbones with a longer LM pretraining (BUILD=1, the
# default; INSTALL_ASSETS=1 also replaces the shipped ones in src/ so the runs below use them), then the
# quickstart recipe and a longer run (more images, more finetune epochs). Logs, tables and the rebuilt
# assets (assets.tgz) go to $OUT (default /tmp/qmamba-micro).
#   LM_STEPS=5000 LM_BATCH=32 SFT_STEPS=3000 VISION_STEPS=2400 WORLD=6000 LONG=0 bash benchmarks/micro_gpu.sh
#   QUICK=0 skips the default quickstart; CHOICE_SFT=600 steps of tuning with the multiple-choice drills after the
#   first tuning (0: none); CHOICE=1 puts the drills in pretraining and the first tuning instead;  BUILD=0 LONG_ARGS="--n-align 8000 --n-finetune 8000 --align-epochs 1 --finetune-epochs 3 --finetune-batch-size 32" bash benchmarks/micro_gpu.sh
set -uo pipefail
OUT=${OUT:-/tmp/qmamba-micro}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
stamp() { echo "[$(date +%T)] $*"; }
if [ "${BUILD:-1}" = 1 ]; then
  stamp build
  QMAMBA_BACKEND=${BUILD_BACKEND:-auto} python3 -m qmamba micro build --out /tmp/assets --device cuda --quiet \
    --lm-steps "${LM_STEPS:-5000}" --lm-batch-size "${LM_BATCH:-32}" --vision-steps "${VISION_STEPS:-2400}" \
    --sft-steps "${SFT_STEPS:-3000}" --choice-sft-steps "${CHOICE_SFT:-600}" ${CHOICE:+--choice-drills} \
    --world-size "${WORLD:-6000}" > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
  python3 -c "import json; b=json.load(open('/tmp/assets/build.json')); l=b['lm']; v=b['vision']; \
print({k: l[k] for k in ('vocab_size', 'train_loss', 'heldout_loss', 'answer_accuracy_chat', 'answer_accuracy_grounded', \
'answer_accuracy_exist', 'answer_accuracy_choice')}, \
'retrieval', v['retrieval_top1'], 'seconds', b['seconds'])" | tee "$OUT/build_summary.txt"
  tar czf "$OUT/assets.tgz" -C /tmp assets
  stamp "grounding gate: POPE-like questions with the image in words"
  python3 -m qmamba data synth --out /tmp/gate_world --n-align 20 --n-finetune 20 > /dev/null 2>&1
  python3 benchmarks/micro_lm_grounding.py --world /tmp/gate_world --lm /tmp/assets/mamba | tee "$OUT/gate.md"
  if [ "${INSTALL_ASSETS:-0}" = 1 ]; then  # the quickstarts below then run on the rebuilt backbones
    rm -rf src/qmamba/assets/micro && cp -r /tmp/assets src/qmamba/assets/micro
  fi
fi
if [ "${QUICK:-1}" = 1 ]; then
  stamp quickstart
  python3 -m qmamba quickstart --out /tmp/qs --device cuda > "$OUT/quickstart.log" 2>&1; tail -25 "$OUT/quickstart.log"
fi
[ "${LONG:-1}" = 1 ] || { stamp done; exit 0; }
stamp long
python3 -m qmamba quickstart --out /tmp/qs_long --device cuda ${LONG_ARGS:---n-align 8000 --n-finetune 8000 --align-epochs 1 --finetune-epochs 3 --finetune-batch-size 32} \
  > "$OUT/long.log" 2>&1; tail -25 "$OUT/long.log"
stamp done
