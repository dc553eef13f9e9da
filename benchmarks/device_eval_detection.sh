#!/usr/bin/env bash
# `twinray eval detection` on a GPU machine that has PyTorch but neither Ray nor this project
# installed (the team's lent H200): the package is imported from this checkout, wheels the machine
# lacks come from .whl/ (pydicom, monai), the phantoms are rendered there, and the published tools (the
# segmenter, translator and generator of a store's models/ folder) are copied in. The ablation fits
# its detectors in-process, so nothing else is needed. Writes the JSON report, the table and the
# figures to OUT.
#
# Usage, from the repository root:  bash benchmarks/device_eval_detection.sh MODELS OUT [EVAL ARGS...]
#   MODELS: a copy of <store>/<bucket>/models holding segmentation, matching-pairs, normal-synthesis
#   EVAL ARGS: of `twinray eval detection` (default: --seeds 3 --device cuda)
#   PHANTOMS_TRAIN=N (environment): the detectors train on N training phantoms (dataset
#     cxr-phantoms-v2-N, the same generator and seed, so its val and test are the default's) while the
#     tools stay those trained on the default 320 (--tools-dataset cxr-phantoms-v2)
# The wheels (pure Python; .whl/ is git-ignored), fetched here before the run:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --platform any -d .whl \
#       pydicom==3.0.2 monai==1.6.1
set -euo pipefail
models=$(realpath "$1") out=$(realpath "$2")
shift 2
[ $# -gt 0 ] || set -- --seeds 3 --device cuda
site=$(mktemp -d)
mkdir -p "$site/twinray"
ln -s "$PWD/shared" "$site/twinray/shared"
ln -s "$PWD/training" "$site/twinray/training"
ln -s "$PWD/services" "$site/twinray/services"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" .whl/*.whl
fi
export PYTHONPATH="$site" PYTHONUNBUFFERED=1 TWINRAY_HOME
TWINRAY_HOME=$(mktemp -d)
mkdir -p "$TWINRAY_HOME/store/twinray"
cp -r "$models" "$TWINRAY_HOME/store/twinray/models"
twinray() { python3 -m twinray.services.cli.main "$@"; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
twinray data phantoms --workers "$(nproc)"
if [ -n "${PHANTOMS_TRAIN:-}" ]; then
    twinray data phantoms --name "cxr-phantoms-v2-$PHANTOMS_TRAIN" --train "$PHANTOMS_TRAIN" --workers "$(nproc)"
    set -- --dataset "cxr-phantoms-v2-$PHANTOMS_TRAIN" --tools-dataset cxr-phantoms-v2 "$@"
fi
started=$(date +%s)
twinray eval detection "$@" --figure "$out/detection_ablation.png" --json | tee "$out/detection_ablation.log"
tail -n 1 "$out/detection_ablation.log" >"$out/detection_ablation.json"
python3 - "$out/detection_ablation.json" <<'EOF' | tee "$out/detection_ablation.md"
import json, sys
from twinray.services.cli.reports import print_detection_report
print_detection_report(json.load(open(sys.argv[1])))
EOF
echo "ablation wall time: $(( $(date +%s) - started )) s"
