#!/usr/bin/env bash
# Regenerates the example models from nothing:
#   1. generate.py                      raw metrics.csv and placement.csv       -> out/
#   2. sidecar features transform (x3)  model input matrices + .meta.json        -> out/
#   3. train.py                         bandwidth/anomaly/placement.onnx, METRICS.md -> examples/models/
#   4. sidecar profile build (x3)       drift reference profiles (.profile)      -> examples/models/
#
# Usage: examples/training/run.sh            (from anywhere; ~3-6 min on 2 cores)
#        QUICK=1 examples/training/run.sh    (small data and short training: a smoke test, ~1 min;
#                                             writes to out/quick/ and out/quick/models/, not examples/models/)
# Environment: SEED (default 7), PYTHON (default /usr/bin/python3, Debian's, with python3-torch,
# python3-onnx, python3-numpy), OUT (default examples/training/out), MODELS (default
# examples/models), GEN_ARGS and TRAIN_ARGS (extra flags for generate.py and train.py).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PY=${PYTHON:-/usr/bin/python3}
SEED=${SEED:-7}
OUT=${OUT:-$HERE/out}
MODELS=${MODELS:-$ROOT/examples/models}
GEN_ARGS=${GEN_ARGS:-}
TRAIN_ARGS=${TRAIN_ARGS:-}
if [[ "${QUICK:-}" == 1 ]]; then
	OUT=$OUT/quick
	MODELS=${QUICK_MODELS:-$OUT/models}
	GEN_ARGS="--vms 40 --days 2 --placement-rows 40000 $GEN_ARGS"
	TRAIN_ARGS="--bw-epochs 2 --bw-samples 40000 --anomaly-epochs 2 --placement-epochs 3 $TRAIN_ARGS"
fi

step() { printf '\n==> [%s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
start=$(date +%s)

step "checking tools"
if ! "$PY" -c 'import torch, onnx, numpy' 2>/dev/null; then
	echo "$PY cannot import torch, onnx and numpy." >&2
	echo "Install Debian's packages: apt-get install python3-torch python3-onnx python3-numpy" >&2
	exit 1
fi
"$PY" -c 'import torch, onnx, numpy; print("python", __import__("sys").version.split()[0], "torch", torch.__version__, "onnx", onnx.__version__, "numpy", numpy.__version__)'
blas=$(readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3 2>/dev/null || true)
case "$blas" in
*openblas* | *blis* | *mkl*) echo "BLAS: $blas" ;;
*)
	echo "warning: BLAS is ${blas:-unknown} (Debian's reference BLAS?). Debian's torch does its" >&2
	echo "         matrix products there; the LSTM trains ~10x slower than with OpenBLAS:" >&2
	echo "         apt-get install libopenblas0-pthread" >&2
	;;
esac
command -v go >/dev/null || { echo "go not found on PATH" >&2; exit 1; }

mkdir -p "$OUT" "$MODELS"

step "1/4 generate raw data (seed $SEED) -> $OUT"
# shellcheck disable=SC2086
"$PY" "$HERE/generate.py" --out "$OUT" --seed "$SEED" $GEN_ARGS

step "2/4 sidecar features transform (the sidecar's own Go canonicalizer)"
# Built once and run three times; the same as `go run ./cmd/sidecar features transform ...`.
(cd "$ROOT" && go build -o "$OUT/sidecar" ./cmd/sidecar)
# Golden vectors first: the canonicalizer that writes the matrices must give, bit for bit, the
# committed answers for the committed inputs; training stops here otherwise.
for spec in bandwidth anomaly placement; do
	(cd "$ROOT" && "$OUT/sidecar" features golden --spec "examples/specs/$spec.yaml" --file "examples/specs/golden/$spec.json")
done
for spec in bandwidth anomaly placement; do
	in=$OUT/metrics.csv
	[[ $spec == placement ]] && in=$OUT/placement.csv
	echo "--- $spec: sidecar features transform --spec examples/specs/$spec.yaml --in ${in#"$ROOT"/} --out ${OUT#"$ROOT"/}/$spec.features.csv"
	(cd "$ROOT" && "$OUT/sidecar" features transform --quiet \
		--spec "examples/specs/$spec.yaml" --in "$in" --out "$OUT/$spec.features.csv")
done

step "3/4 train and export ONNX -> $MODELS"
# shellcheck disable=SC2086
"$PY" -W ignore::UserWarning "$HERE/train.py" --data "$OUT" --models "$MODELS" --seed "$SEED" --data-seed "$SEED" $TRAIN_ARGS

step "4/4 sidecar profile build (drift reference profiles, from the same raw data and the models) -> $MODELS"
# Each model's reference for drift: its spec's canonical rows of the training data, the rows the
# matrices above hold, profiled per feature; and the model's answers to them, per output value
# (-model runs it with ONNX Runtime, as serving does); bound to the spec by its fingerprint.
for spec in bandwidth anomaly placement; do
	in=$OUT/metrics.csv
	[[ $spec == placement ]] && in=$OUT/placement.csv
	echo "--- $spec: sidecar profile build --spec examples/specs/$spec.yaml --in ${in#"$ROOT"/} --model ${MODELS#"$ROOT"/}/$spec.onnx --out ${MODELS#"$ROOT"/}/$spec.profile"
	(cd "$ROOT" && "$OUT/sidecar" profile build --quiet \
		--spec "examples/specs/$spec.yaml" --in "$in" --model "$MODELS/$spec.onnx" --out "$MODELS/$spec.profile")
done

step "done in $(($(date +%s) - start))s"
ls -l "$MODELS"
