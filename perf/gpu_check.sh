#!/usr/bin/env bash
# Issue 20, item 5: the GPU measurements in one device call, each step under its own time limit.
#
#   perf/gpu_check.sh wheels   # here, once: the packages the device image lacks, as wheels in .whl/ (git-ignored)
#   perf/gpu_check.sh run      # on the device machine, from the repository root (the device tool's `run`,
#                              # carry [".whl"], timeout_s 600); results and one log under $OUT
#
# `run` installs .whl/ into /tmp/site, then, in order of what the issue needs most, writes under $OUT:
#   projection_poppi_table2_bf16.md          Poppi Table 2 on 8 devices, bf16-mixed + channels-last
#   projection_poppi_table2_bf16_compile.md  the same with torch.compile
#   speed_gpu_resnet50.md                    harness on resnet50, batch 32, options (bf16, channels-last, compile)
#   speed_gpu_vit_base.md                    harness on vit_base_patch16_224, batch 32, Grad-CAM and Shapley-CAM
#                                            (its tail on the math attention kernel, the layers before on the fused)
#   gpu_check.log                            nvidia-smi, every step's output and exit status (124: its limit)
# Each step's limit (seconds) can be set: PROJECTION_S, HARNESS_S, VIT_S; DEVICE (default cuda) and the
# smoke variables below exist so that the script can be tried on a CPU (tests/test_gpu_check.py).
set -u
cd "$(dirname "$0")/.." || exit 1

if [ "${1:-}" = "wheels" ]; then
    # what the device image (/work/.library/device/KINDS.md) lacks, at the versions the tests here use; Python 3.12,
    # manylinux x86-64. grad-cam publishes no wheel after 1.0.0: its sdist is built here (pure Python).
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl captum==0.9.0 ttach==0.0.3 torchcam==0.5.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 \
        jsonargparse==4.53.0 docstring-parser==0.18.0 typeshed-client==2.15.0 importlib-resources==7.1.0 &&
        python3 -m pip wheel -q --no-deps -w .whl grad-cam==1.5.7
    exit $?
fi
if [ "${1:-}" != "run" ]; then
    echo "usage: perf/gpu_check.sh wheels|run" >&2
    exit 2
fi

OUT=${OUT:-/tmp/gpu_check}
DEVICE=${DEVICE:-cuda}
CONFIG=${CONFIG:-configs/poppi_table2.yaml}
PROJECTION_ARGS=${PROJECTION_ARGS:-}            # smoke: e.g. "--size 32 --batch 2 --rounds 1"
HARNESS_ARGS=${HARNESS_ARGS:-}                  # smoke: e.g. "--size 32 --repeats 1 --perturb-repeats 1"
RESNET=${RESNET:-resnet50}
VIT=${VIT:-vit_base_patch16_224}
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ls .whl/*.whl > /dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl >> "$LOG" 2>&1 && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
PEERS=""
python3 -c "import pytorch_grad_cam, torchcam" 2>> "$LOG" || PEERS="--no-peers"
{ date; nvidia-smi -L 2>&1; python3 -c "import torch; print('torch', torch.__version__)"; } >> "$LOG" 2>&1

step() {  # step LIMIT NAME COMMAND...
    local limit=$1 name=$2
    shift 2
    echo "== $name (limit ${limit} s): $*" >> "$LOG"
    timeout "$limit" "$@" >> "$LOG" 2>&1
    echo "== $name: exit $?" >> "$LOG"
}

step "${PROJECTION_S:-150}" projection_bf16 python3 -m perf.projection --device "$DEVICE" --config "$CONFIG" \
    --devices 8 --precision bf16-mixed --channels-last --random-init $PROJECTION_ARGS \
    --out "$OUT/projection_poppi_table2_bf16.md"
step "${PROJECTION_S:-150}" projection_bf16_compile python3 -m perf.projection --device "$DEVICE" --config "$CONFIG" \
    --devices 8 --precision bf16-mixed --channels-last --compile --random-init $PROJECTION_ARGS \
    --out "$OUT/projection_poppi_table2_bf16_compile.md"
step "${HARNESS_S:-150}" harness_resnet50 python3 -m perf.harness --device "$DEVICE" --backbones "$RESNET" \
    --batch-sizes 32 --perturb-images 8 --explainers gradcam gradcampp scorecam \
    --metrics average_drop average_increase coherency deletion insertion max_box_acc \
    --options-backbones "$RESNET" $PEERS $HARNESS_ARGS --out "$OUT/speed_gpu_resnet50.md"
step "${VIT_S:-90}" harness_vit_base python3 -m perf.harness --device "$DEVICE" --backbones "$VIT" \
    --batch-sizes 32 --explainers gradcam shapleycam --metrics --options-backbones $PEERS $HARNESS_ARGS \
    --out "$OUT/speed_gpu_vit_base.md"
grep "^== .*exit" "$LOG"
