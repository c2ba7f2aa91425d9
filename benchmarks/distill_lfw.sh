#!/usr/bin/env bash
# The runs behind docs/accuracy-distill.md (issue 8); benchmarks/distill_report.py then builds the report.
#   1. teacher = FROQ with MobileFaceNet + a folds 1-3 calibration: `froq annotate` of all LFW-dev images and of the
#      degraded folds 4-5 copy (benchmarks/make_degraded.py, the FROQ core report's copy);
#   2. training rows = the teacher's annotations of the folds 1-3 identities;
#   3. `froq distill` per student: self-training copies of the folds 1-3 images labelled by the same teacher in the
#      first student's run (the second student trains on the same rows and copies), identity-disjoint validation
#      split, Ray Train;
#   4. `froq annotate --set scoring.mode=student` of folds 4-5, clean and degraded.
# Then: .venv/bin/python -m benchmarks.distill_report. Every step is a resumable froq run: re-running the script skips finished work. Outputs land in .bench/distill/.
# Usage: benchmarks/distill_lfw.sh [EPOCHS]   (students: tiny_cnn at 64 px, mobilefacenet_student at 64 px with
# EPOCHS epochs; mobilefacenet_student at 112 px with the energy head: 4 epochs at lr 5e-4, its trunk starting from the
# teacher's weights; mobilefacenet_student at 64 px with the energy head, EPOCHS epochs)
set -euo pipefail
cd "$(dirname "$0")/.."
FROQ=.venv/bin/froq
R=.bench/distill
EPOCHS=${1:-8}
MFN=../shared/models/mobilefacenet/mobilefacenet.pt
TEACHER="--set model.name=mobilefacenet --set model.weights=$MFN
  --set calibration.artifact=docs/results/mobilefacenet-lfw-folds123-sample300.calibration.json"
RES="--set resources.num_cpus=2 --set resources.model_batch_size=64 --set resources.ray_batch_size=128"
mkdir -p $R
[ -d .bench/lfw-degraded ] || .venv/bin/python benchmarks/make_degraded.py --src ../shared/data/lfw-dev/images \
  --dst .bench/lfw-degraded --seed 0 --fraction 0.5
.venv/bin/python benchmarks/lfw_manifests.py --folds 4,5 --out .bench/lfw-folds45.csv
.venv/bin/python benchmarks/lfw_manifests.py --folds 4,5 --root .bench/lfw-degraded --out .bench/lfw-degraded-folds45.csv

# 1. teacher annotations (quality + MobileFaceNet embedding)
$FROQ annotate --input ../shared/data/lfw-dev/images --set input.identity_from_folder=true $TEACHER $RES \
  --output $R/teacher-clean
$FROQ annotate --input .bench/lfw-degraded-folds45.csv --set input.identity_column=identity $TEACHER $RES \
  --output $R/teacher-degraded

# 2. the folds 1-3 rows of the teacher's annotations
.venv/bin/python - "$R" <<'PY'
import sys
from pathlib import Path
import pyarrow.compute as pc, pyarrow.dataset as ds, pyarrow.parquet as pq
from benchmarks.lfw_manifests import fold_identities
root = Path(sys.argv[1]); lfw = Path("../shared/data/lfw-dev")
table = ds.dataset(root / "teacher-clean", format="parquet", exclude_invalid_files=True).to_table()
keep = pc.is_in(table["identity"], value_set=__import__("pyarrow").array(sorted(fold_identities(lfw / "pairs.txt", lfw / "images", [1, 2, 3]))))
table = table.filter(keep).drop_columns(["embedding"])
pq.write_table(table, root / "teacher-folds123.parquet")
print(f"{root}/teacher-folds123.parquet: {table.num_rows} rows of {len(set(table['identity'].to_pylist()))} identities")
PY

# 3.-4. students
student() {  # name, then froq distill arguments (they win over the defaults here)
  local name=$1; shift
  if [ -f "$R/$name/artifact/card.json" ]; then  # trained: keep the first run's timing and log
    echo "$name: already trained ($R/$name/artifact/card.json)"
  else
    /usr/bin/time -v -o "$R/$name.time" $FROQ distill --config configs/distill.yaml \
      --set "distill.annotations=[$R/teacher-folds123.parquet]" $TEACHER \
      --set self_training.fraction=1.0 --set training.epochs="$EPOCHS" $RES "$@" --output "$R/$name/artifact" \
      2>&1 | tee "$R/$name.log" | grep -E "froq_ray|Error|error" || true
  fi
  grep -E "Elapsed|Maximum resident" "$R/$name.time"
  for split in clean degraded; do
    local input=.bench/lfw-folds45.csv
    [ $split = degraded ] && input=.bench/lfw-degraded-folds45.csv
    $FROQ annotate --input "$input" --set input.identity_column=identity --set scoring.mode=student \
      --set scoring.student_artifact="$R/$name/artifact" $RES --output "$R/$name/ann-$split" | grep -E "summary|nothing to do"
  done
}
student tiny_cnn-64 --set student.arch=tiny_cnn --set student.input_size=64 --set "student.options={width: 16}"
# the second student learns from the same data: the clean rows plus the first run's teacher-labelled copies
student mobilefacenet_student-64 --set student.arch=mobilefacenet_student --set student.input_size=64 \
  --set "student.options={init_weights: $MFN}" --set self_training.enabled=false \
  --set "distill.annotations=[$R/teacher-folds123.parquet,$R/tiny_cnn-64/artifact/self_training]"
# the same data at 112 px with the energy head (the log norms of every trunk stage also enter the head): the trunk
# starts as the teacher's own (same input size), so a lower learning rate keeps it; the crops are decoded once
# (training.cache_decoded: auto), so the training worker may take both CPUs
student mobilefacenet_student-112-energy --set student.arch=mobilefacenet_student --set student.input_size=112 \
  --set "student.options={init_weights: $MFN, head: energy}" --set self_training.enabled=false \
  --set "distill.annotations=[$R/teacher-folds123.parquet,$R/tiny_cnn-64/artifact/self_training]" \
  --set training.epochs=4 --set training.lr=0.0005 --set training.cpus_per_worker=2
# the energy head at 64 px (a third of the teacher's FLOPs), with the 64 px student's settings otherwise
student mobilefacenet_student-64-energy --set student.arch=mobilefacenet_student --set student.input_size=64 \
  --set "student.options={init_weights: $MFN, head: energy}" --set self_training.enabled=false \
  --set "distill.annotations=[$R/teacher-folds123.parquet,$R/tiny_cnn-64/artifact/self_training]" \
  --set training.cpus_per_worker=2
