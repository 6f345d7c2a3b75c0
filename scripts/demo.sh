#!/usr/bin/env bash
# The main job: get flower_photos, embed it once, train the logreg and SVM heads, report (report.html), export the
# logreg head fused with the backbone as one TFLite model.
# Offline, set EMBEDFLOW_DATA to a class-per-subfolder copy of the photos.
set -euo pipefail
cd "$(dirname "$0")/.."

DATA="${EMBEDFLOW_DATA:-data/flower_photos}"
if [ ! -d "$DATA" ]; then
  echo "downloading flower_photos (218 MB, CC-BY) into data/ ..."
  mkdir -p data
  python3 - <<'PY'
import tarfile, urllib.request
url = "https://storage.googleapis.com/download.tensorflow.org/example_images/flower_photos.tgz"
path, _ = urllib.request.urlretrieve(url, "data/flower_photos.tgz")
with tarfile.open(path) as t:
    t.extractall("data", filter="data")
PY
fi

set -x
embedflow embed "$DATA"
embedflow embed "$DATA"            # unchanged: hashing only, nothing re-embedded
embedflow info
embedflow fit --head logreg
embedflow fit --head svm
# the SVM head's report page: one self-contained HTML file (thumbnails inline, no network), open it offline
ls -l models/svm/report.html
first=$(find "$DATA" -iname '*.jpg' | sort | sed -n 1,3p)
# shellcheck disable=SC2086
embedflow predict models/svm $first --top-k 2
# shellcheck disable=SC2086
embedflow predict models/svm $first --top-k 2 --format csv
sed -n '/^# /,/^## Training data/p' models/svm/README.md    # the model card (front matter, sections; labels.txt beside it)
# the logreg head fused with its backbone into one TFLite model (parity-checked), used on raw images
embedflow export models/logreg --format tflite
# the class names travel inside the .tflite file (TFLite metadata, as MediaPipe and Android read it)
python -c 'import sys; from embedflow.models.tflite_metadata import read_metadata as r; m = r(open(sys.argv[1], "rb").read()); print("metadata:", m["name"], "| labels:", ", ".join(m["labels"]))' models/logreg-tflite/model.tflite
# shellcheck disable=SC2086
embedflow predict models/logreg-tflite/model.tflite $first --top-k 2
