"""Issue #16's int8 case with the real MobileNetV2: 14 flowers-dev photos (5/5/4) of 3 classes, a logreg head
(11 training / 3 validation images), exported with --quantize int8 (too few images to calibrate: the
dynamic-range fallback) (the same file as --quantize dynamic here). Before the fix both predicted one class for every image (33%
agreement) with exit 0 and "ok": true. The parity gate must report the truth: its agreement is the one measured
here independently on all 14 photos' validation subset, "ok" follows the threshold, and --strict exits 7 when
it is not ok. The measured agreements are recorded in docs/finetuning.md (Quantized exports)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from .conftest import FLOWERS, imagenet_keras_home as _keras_home

CLASSES = (("daisy", 5), ("roses", 5), ("tulips", 4))


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.timeout(1800)
@pytest.mark.skipif(not FLOWERS.is_dir() or _keras_home() is None, reason="needs flowers-dev and the ImageNet weights")
def test_quantized_exports_of_a_14_photo_logreg_head_tell_the_truth(tmp_path, monkeypatch, cli):
    from ai_edge_litert.interpreter import Interpreter

    from embedflow.data import load_image

    monkeypatch.setenv("KERAS_HOME", str(_keras_home()))
    for cls, n in CLASSES:
        (tmp_path / "data" / cls).mkdir(parents=True)
        for p in sorted((FLOWERS / cls).glob("*.jpg"))[:n]:
            (tmp_path / "data" / cls / p.name).symlink_to(p)
    cli("embed", tmp_path / "data", "--quiet", tiny=False)
    fit = json.loads(cli("fit", "--head", "logreg", "--json").stdout)
    assert (fit["n_train"], fit["n_val"]) == (11, 3)
    source = {Path(r["path"]).name: r["top"][0]["label"] for r in map(json.loads, cli(
        "predict", "models/logreg", tmp_path / "data", "--format", "jsonl", "--no-reject").stdout.splitlines())}
    assert len(source) == 14
    measured = {}
    # --quantize dynamic writes the same file as int8's fallback here (11 calibration images), so one export
    # covers both; CI time is the budget (each conversion of the real backbone takes about a minute)
    for quantize in ("int8",):
        r = cli("export", "models/logreg", "--quantize", quantize, "--json", expect=None)
        assert r.exit_code == 0, r.stderr
        out = json.loads(r.stdout)
        parity, folder = out["parity"], Path(out["out_dir"])
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["quantize"] == "dynamic"  # int8 falls back: 11 calibration images are too few
        if quantize == "int8":
            assert manifest["quantize_requested"] == "int8" and parity["calibration_images"] == 11
            assert "int8 needs at least 50 calibration images, the training split has 11" in r.stderr
        # the truth, measured here on every photo, not only the 3 the gate checks
        interp = Interpreter(model_path=str(folder / "model.tflite"))
        interp.allocate_tensors()
        inp, outp = interp.get_input_details()[0], interp.get_output_details()[0]
        labels = (folder / "labels.txt").read_text().split("\n")
        got = {}
        for path in sorted((tmp_path / "data").rglob("*.jpg")):
            interp.set_tensor(inp["index"], load_image(path, 224)[None].astype(inp["dtype"]))
            interp.invoke()
            got[path.name] = labels[int(interp.get_tensor(outp["index"])[0].argmax())]
        agreement = float(np.mean([got[k] == source[k] for k in source]))
        measured[quantize] = (parity["tflite"]["top1_agreement"], agreement)
        assert len(set(got.values())) > 1, f"{quantize}: one class for every image"
        assert agreement >= 13 / 14, f"{quantize}: {agreement:.3f} agreement on all 14 photos"
        assert parity["ok"] == (parity["tflite"]["top1_agreement"] >= parity["threshold"])
        assert manifest["parity"]["ok"] == parity["ok"]
        assert ("parity below" in r.stderr) == (not parity["ok"])
        if not parity["ok"]:  # --strict on an ok export is exit 0 in tests/test_export_quantized_parity.py
            strict = cli("export", "models/logreg", "--quantize", quantize, "--strict", "--out", f"strict-{quantize}",
                         expect=None)
            assert strict.exit_code == 7, strict.stderr
    print("measured (gate agreement on 3 validation photos, agreement on all 14):", measured)
