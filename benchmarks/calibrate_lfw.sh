#!/usr/bin/env bash
# The calibration runs behind the shipped dlib artifact and the FROQ accuracy report (docs/accuracy-froq.md).
# Usage: benchmarks/calibrate_lfw.sh [all | dlib | dlib-pseudo-label | mobilefacenet | mobilefacenet-degraded]
# Each is a plain `froq calibrate` run on this 2-core box; /usr/bin/time -v records wall time and peak RSS.
# Outputs land in .bench/ (ignored); the shipped artifact is copied to froq_ray/assets/.
set -euo pipefail
cd "$(dirname "$0")/.."
FROQ=.venv/bin/froq
# small shards: a long calibration keeps its progress (resume) if it is interrupted
CPU="--set resources.num_cpus=3 --set resources.num_cpus_per_actor=2 --set resources.ray_batch_size=64 --set output.shard_size=256"
MFN="--set model.name=mobilefacenet --set model.weights=../shared/models/mobilefacenet/mobilefacenet.pt"
mkdir -p .bench
# The dlib artifact shipped before issue 15 (now the reference docs/results/dlib_resnet_v1-lfw-folds234.calibration.json)
# was drawn from the identities of pairs.txt folds 2-4 (when it was made, the pairs reader numbered folds from 0, so
# "--folds 1,2,3" meant folds 2-4); --folds 2,3,4 reproduces exactly that sample.
.venv/bin/python benchmarks/lfw_manifests.py --folds 2,3,4 --sample 500 --seed 0 --out .bench/lfw-dlib-sample500.csv
[ -d .bench/lfw-degraded ] || .venv/bin/python benchmarks/make_degraded.py --src ../shared/data/lfw-dev/images \
  --dst .bench/lfw-degraded --seed 0 --fraction 0.5
.venv/bin/python benchmarks/lfw_manifests.py --folds 4,5 --root .bench/lfw-degraded --out .bench/lfw-degraded-folds45.csv
# only the images the copy really degraded need a run: the others are byte-identical to the clean ones
.venv/bin/python benchmarks/lfw_manifests.py --folds 4,5 --root .bench/lfw-degraded --only-degraded \
  --out .bench/lfw-degraded-only-folds45.csv

run() {  # name, then froq arguments
  local name=$1; shift
  /usr/bin/time -v -o ".bench/$name.time" $FROQ calibrate "$@" $CPU --set output.progress_interval_s=60 \
    2>&1 | tee ".bench/$name.log" | grep -E "froq_ray|Error|error" || true
  grep -E "Elapsed|Maximum resident" ".bench/$name.time"
}

if [ "${1:-all}" = all ] || [ "$1" = dlib ]; then
  # 1. the built-in model's shipped calibration (since issue 15, docs/calibration.md): linear observer on the
  #    certainty-ratio target, all 3,811 LFW-dev images with identities from the folders, one forward pass per image
  run cal-dlib-builtin --input ../shared/data/lfw-dev/images --set input.identity_from_folder=true \
    --set calibration.target=cr --set calibration.method=linear --output .bench/cal-dlib-builtin --mode overwrite
  cp .bench/cal-dlib-builtin/_froq/calibration.json froq_ray/assets/dlib_resnet_v1.calibration.json
fi
if [ "$1" = dlib-pseudo-label ]; then
  # 1b. the built-in calibration shipped before issue 15 (greedy, perturbation pseudo-label, 500 seeded images of
  #     the LFW-dev folds 2-4 identities; 111 forward passes per image): the reference of the dlib observer report
  run cal-dlib-pseudo-label --input .bench/lfw-dlib-sample500.csv --set input.identity_column=identity \
    --output .bench/cal-dlib-pseudo-label --mode overwrite
  cp .bench/cal-dlib-pseudo-label/_froq/calibration.json docs/results/dlib_resnet_v1-lfw-folds234.calibration.json
fi
if [ "${1:-all}" = all ] || [ "$1" = mobilefacenet ]; then
  # 2. MobileFaceNet on all 3,811 LFW-dev images (observations reused by the accuracy report)
  run cal-mfn-lfw-all --input ../shared/data/lfw-dev/images --set input.identity_from_folder=true $MFN \
    --output .bench/cal-mfn-lfw-all
fi
if [ "${1:-all}" = all ] || [ "$1" = mobilefacenet ] || [ "$1" = mobilefacenet-degraded ]; then
  # 3. pseudo-labels and norms of the degraded images of the folds 4-5 copy (the report's degraded split takes
  #    the untouched half of that copy from run 2)
  run cal-mfn-lfw45-degraded --input .bench/lfw-degraded-only-folds45.csv --set input.identity_column=identity $MFN \
    --output .bench/cal-mfn-lfw45-degraded
fi
