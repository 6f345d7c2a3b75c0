"""Per-image predictions (issue #17): fit's validation split and evaluate record, per image, key, true and
predicted label, p(true), top-3 and loss; the most confused pairs; predictions.csv, the JSON and a
top-losses contact sheet. Synthetic vectors written into caches (no TensorFlow): a planted mislabelled
image has the highest loss."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from PIL import Image

from embedflow import api, models
from embedflow.reports.predictions import confused_pairs, image_predictions, predictions_csv, top_losses

from .test_audit import CLASSES, clusters, run, write_cache


def test_image_predictions_hold_the_right_values():
    proba = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.05, 0.9, 0.05], [0.2, 0.2, 0.6]])
    preds = image_predictions(["a.png", "b.png", "c.png", "d.png"], [0, 1, 1, 1], proba, CLASSES)
    a, b, c, d = preds
    assert (a.true, a.predicted, a.correct) == ("apples", "apples", True)
    assert (b.true, b.predicted, b.correct) == ("limes", "plums", False)
    assert b.p_true == pytest.approx(0.3) and b.loss == pytest.approx(-math.log(0.3))
    assert [t["label"] for t in b.top] == ["plums", "limes", "apples"]
    assert [t["probability"] for t in b.top] == pytest.approx([0.6, 0.3, 0.1])
    assert d.top[0]["label"] == "plums" and d.top[1]["label"] == "apples"  # ties: lower class index first
    assert [p.key for p in top_losses(preds)] == ["d.png", "b.png", "a.png", "c.png"]
    pairs = confused_pairs(preds, CLASSES)
    assert [(p.true, p.predicted, p.count) for p in pairs] == [("limes", "plums", 2)]
    assert pairs[0].share == pytest.approx(2 / 3)
    assert a.to_dict() == {"key": "a.png", "true": "apples", "predicted": "apples", "p_true": 0.7,
                           "loss": round(-math.log(0.7), 6), "correct": True,
                           "top": [{"label": "apples", "probability": 0.7}, {"label": "limes", "probability": 0.2},
                                   {"label": "plums", "probability": 0.1}]}
    rows = list(csv.DictReader(predictions_csv(preds).splitlines()))
    assert rows[1] == {"key": "b.png", "true": "limes", "predicted": "plums", "p_true": "0.300000",
                       "loss": f"{-math.log(0.3):.6f}", "correct": "0",
                       "top": "plums:0.600000;limes:0.300000;apples:0.100000"}


def test_a_zero_probability_gives_a_finite_loss():
    (p,) = image_predictions(["x"], [2], np.array([[1.0, 0.0, 0.0]]), CLASSES)
    assert p.p_true == 0.0 and p.loss == pytest.approx(-math.log(1e-12))


def planted(seed=0):
    """Clustered vectors with one apple filed under limes, chosen so that it lands in fit's validation split."""
    X, y, _, _ = clusters(seed)
    for row in range(len(y)):
        if y[row] != 0:
            continue
        trial = y.copy()
        trial[row] = 1
        _, val = models.split_indices(trial, [f"h{i}" for i in range(len(y))], CLASSES, 0.2, 0)
        if row in val:
            return X, trial, row
    raise AssertionError("no apple lands in the validation split")


def test_fit_records_per_image_validation_predictions_and_the_planted_error_has_the_highest_loss(tmp_path):
    X, y, row = planted()
    path, keys = write_cache(tmp_path / "c.h5", X, y, images=True)  # distinct hashes: the same split
    clf = api.fit_head(path, "logreg", reporter=None)
    preds = clf.predictions_
    assert [p.key for p in preds] == clf.split_["val_keys"] and len(preds) == clf.n_val == 18
    worst = top_losses(preds, 1)[0]
    assert (worst.key, worst.true, worst.predicted) == (keys[row], "limes", "apples")
    assert worst.p_true < 0.2 and worst.loss > 2 * max(p.loss for p in preds if p.key != keys[row])
    assert sum(not p.correct for p in preds) == 1
    assert [(c.true, c.predicted, c.count) for c in clf.confused_pairs_] == [("limes", "apples", 1)]
    out = clf.save(tmp_path / "m")
    report = json.loads((out / "report.json").read_text())
    assert report["predictions"] == [p.to_dict() for p in preds]
    assert report["confused_pairs"] == [{"true": "limes", "predicted": "apples", "count": 1,
                                         "share": round(1 / 6, 6)}]
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert [r["key"] for r in rows] == [p.key for p in preds]
    assert {r["key"]: r["correct"] for r in rows}[keys[row]] == "0"
    with Image.open(out / "top-losses.png") as sheet:
        assert sheet.width > 6 * 160 and sheet.height > 3 * 160  # 18 images, 6 a row
        # the worst image is first, outlined in red (a wrong prediction)
        assert sheet.getpixel((4, 24 + 6 + 40))[0] > 200 and sheet.getpixel((4, 24 + 6 + 40))[1] < 60
    assert models.load_model(out).manifest["metrics"]["accuracy"] == pytest.approx(17 / 18)


def test_evaluate_on_a_cache_records_per_image_predictions_and_writes_them(tmp_path):
    X, y, centres, rng = clusters(2)
    train, _ = write_cache(tmp_path / "train.h5", X, y)
    api.fit_head(train, "logreg", reporter=None).save(tmp_path / "m")
    yt = np.repeat(np.arange(3), 10)  # 30 new images around the same centres
    Xt = (centres[yt] + rng.normal(0, 0.145, (30, X.shape[1]))).astype(np.float32)
    yt[4] = 2  # an apple filed under plums
    test, keys = write_cache(tmp_path / "test.h5", Xt, yt)
    result = api.evaluate(tmp_path / "m", test, out=tmp_path / "ev", reporter=None)
    assert sorted(p.key for p in result.predictions) == sorted(keys)  # the cache's order (by key)
    worst = result.top_losses(1)[0]
    assert (worst.key, worst.true, worst.predicted) == (keys[4], "plums", "apples")
    assert result.confused_pairs[0].to_dict()["true"] == "plums"
    for name in ("eval-report.json", "eval-predictions.csv", "eval-top-losses.png"):
        assert (tmp_path / "ev" / name).is_file(), name
    saved = json.loads((tmp_path / "ev" / "eval-report.json").read_text())
    assert {p["key"]: p["correct"] for p in saved["predictions"]}[keys[4]] is False


def test_evaluate_json_on_the_cli_holds_predictions_and_confused_pairs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    X, y, _, _ = clusters(4)
    y[0] = 1
    train, keys = write_cache(tmp_path / "c.h5", X, y)
    api.fit_head(train, "logreg", val_split=0, reporter=None).save(tmp_path / "m")
    out = json.loads(run("evaluate", tmp_path / "m", train, "--json", "--out", tmp_path / "ev").stdout)
    assert len(out["predictions"]) == len(keys)
    assert {"key", "true", "predicted", "p_true", "loss", "correct", "top"} == set(out["predictions"][0])
    assert out["confused_pairs"][0] == {"true": "limes", "predicted": "apples", "count": 1, "share": round(1 / 31, 6)}
    text = run("evaluate", tmp_path / "m", train, "--out", tmp_path / "ev").stdout
    assert "most confused (true -> predicted): limes -> apples 1" in text
