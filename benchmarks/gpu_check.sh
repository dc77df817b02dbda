#!/usr/bin/env bash
# The GPU check: run on a CUDA machine (a standard PyTorch image, no network) from the repo root.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]          # default OUT_DIR: output/gpu_check
#
# Packages the image lacks travel as wheels in .whl/ (prepare them where pip works with
# benchmarks/gpu_wheels.sh); they are installed into /tmp/site first. Then, each step logged to
# OUT_DIR and summed up in OUT_DIR/gpu_report.md:
#   1. the CUDA-relevant tests (tests/cuda: CPU vs CUDA kernels and a whole model) and the fast
#      path's tests, with a CUDA device visible;
#   2. a short AMP training of the quickstart on the GPU (then its COCO evaluation);
#   3. training and inference throughput (images/s, peak memory) of R50-FPN Mask R-CNN and the
#      sephv14_10 recipe on the built-in shapes data (sephnet.tools.benchmark).
# DEVICE=cpu runs the same steps on the CPU with tiny iteration counts (to test this script).
set -uo pipefail
OUT=${1:-output/gpu_check}
DEVICE=${DEVICE:-cuda}
ITERS=${ITERS:-200}
BENCH_ITERS=${BENCH_ITERS:-20}
mkdir -p "$OUT"
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
report="$OUT/gpu_report.md"
{
  echo "# GPU check ($(date -u +%Y-%m-%dT%H:%MZ))"
  python3 -c "import torch; print('torch', torch.__version__, '| CUDA', torch.version.cuda, '|',
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA device')"
} > "$report"

step() {  # step NAME COMMAND...: run, log to OUT/NAME.log, note the result in the report
  local name=$1; shift
  local start=$SECONDS
  "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "- $name: exit $rc, $((SECONDS - start)) s" >> "$report"
  tail -n 3 "$OUT/$name.log" | sed 's/^/    /' >> "$report"
}

step tests python3 -m pytest -q -p no:cacheprovider tests/cuda tests/engine/test_fast_inference.py
amp=(SOLVER.AMP.ENABLED True MODEL.DEVICE "$DEVICE" SOLVER.MAX_ITER "$ITERS"
     SOLVER.STEPS "($((ITERS * 4 / 5)),)" TEST.EVAL_PERIOD 0 SOLVER.CHECKPOINT_PERIOD 100000
     OUTPUT_DIR "$OUT/quickstart_amp")
step quickstart_amp python3 train_net.py --config-file configs/quickstart/mask_rcnn_R_18_FPN_shapes.yaml "${amp[@]}"
shapes=(MODEL.DEVICE "$DEVICE" MODEL.WEIGHTS "" DATASETS.TRAIN "('shapes_train',)"
        DATASETS.TEST "('shapes_val',)" MODEL.ROI_HEADS.NUM_CLASSES 3 SOLVER.IMS_PER_BATCH 4)
# R50-FPN from random weights has frozen identity BN (no normalisation at all): at the usual LR it
# diverges (NaN proposals) within a few steps; a tiny LR keeps it finite, and a step's work does not
# depend on the LR
r50=(--config-file configs/Base-RCNN-FPN.yaml --opts MODEL.MASK_ON True MODEL.RESNETS.DEPTH 50
     SOLVER.BASE_LR 0.00001 "${shapes[@]}")
v14=(--config-file configs/coco/Mask-RCNN-FPN-sephv14_10.yaml --opts "${shapes[@]}")
for task in train eval; do
  step "r50_fpn_$task" python3 -m sephnet.tools.benchmark --task $task --num-iter "$BENCH_ITERS" "${r50[@]}"
  step "sephv14_10_$task" python3 -m sephnet.tools.benchmark --task $task --num-iter "$BENCH_ITERS" "${v14[@]}"
done
cat "$report"
