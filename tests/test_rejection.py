"""Unknown-input rejection wired end to end (issue #17): fit learns the rule on its validation split and
stores it (manifest + checksummed rejector.npz), evaluate reports accuracy and coverage with and without
it, predict says `unknown` (JSON "unknown": true with the score), --no-reject turns it off. Synthetic
vectors in caches, and one run through the CLI with the tiny backbone."""

from __future__ import annotations

import json

import numpy as np
import pytest

from embedflow import api, insight, models
from embedflow.errors import ModelError

from .test_audit import clusters, run, write_cache


def far_vectors(centres, rng, n=5):
    """Vectors pointing away from every class centre (cosine ~ -0.5 to each)."""
    return (-centres.sum(axis=0) + rng.normal(0, 0.145, (n, centres.shape[1]))).astype(np.float32)


def test_fit_learns_the_rule_on_the_validation_split_and_saves_it_checksummed(tmp_path):
    X, y, centres, rng = clusters(5)
    path, _ = write_cache(tmp_path / "c.h5", X, y)
    clf = api.fit_head(path, "logreg", reporter=None)
    rule = clf.rejector_
    assert rule.method == "knn_cosine" and rule.k == 5 and rule.rate == 0.05
    assert rule.params["reference"].shape == (clf.n_train, X.shape[1])  # the training split, not all vectors
    assert rule.reject(far_vectors(centres, rng)).all()
    out = clf.save(tmp_path / "m")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["rejector"]["threshold"] == pytest.approx(rule.threshold_)
    assert manifest["rejector"]["calibrated_on"]["n_val"] == clf.n_val == 18
    assert manifest["files"]["rejector.npz"] == models.sha256_file(out / "rejector.npz")
    loaded = models.load_model(out)
    again = insight.model_rejector(loaded)
    assert again.threshold_ == rule.threshold_
    np.testing.assert_array_equal(again.params["reference"], rule.params["reference"])


def test_no_rule_without_a_validation_split_or_with_reject_rate_none(tmp_path):
    X, y, _, _ = clusters(5)
    path, _ = write_cache(tmp_path / "c.h5", X, y)
    for clf in (api.fit_head(path, "logreg", val_split=0, reporter=None),
                api.fit_head(path, "logreg", reject_rate=None, reporter=None)):
        assert clf.rejector_ is None
        out = clf.save(tmp_path / "m")
        assert "rejector" not in json.loads((out / "manifest.json").read_text())
        assert not (out / "rejector.npz").exists() and insight.model_rejector(models.load_model(out)) is None


def test_evaluate_reports_coverage_and_accuracy_with_and_without_the_rule(tmp_path):
    X, y, centres, rng = clusters(6)
    train, _ = write_cache(tmp_path / "train.h5", X, y)
    api.fit_head(train, "logreg", reporter=None).save(tmp_path / "m")
    yt = np.repeat(np.arange(3), 10)
    Xt = (centres[yt] + rng.normal(0, 0.145, (30, X.shape[1]))).astype(np.float32)
    Xt[:5] = far_vectors(centres, rng)  # five 'apples' that are like nothing the model saw
    test, keys = write_cache(tmp_path / "test.h5", Xt, yt)
    result = api.evaluate(tmp_path / "m", test, reporter=None)
    rej = result.report["rejection"]
    assert set(keys[:5]) <= set(rej["rejected"])
    assert rej["n"] == 30 and rej["coverage"] == pytest.approx(1 - rej["n_rejected"] / 30)
    # the 5 far ones, and a few of the 25 ordinary images: a 5% threshold calibrated on 18 vectors is coarse
    assert rej["n_rejected"] <= 5 + 4
    assert rej["accuracy_all"] == result.accuracy
    assert rej["accuracy_accepted"] >= rej["accuracy_all"]
    text = run("evaluate", tmp_path / "m", test, "--out", tmp_path / "ev").stdout
    assert f"{rej['n_rejected']} of 30 rejected as unknown" in text


def test_a_damaged_rule_file_is_refused(tmp_path):
    X, y, _, _ = clusters(5)
    path, _ = write_cache(tmp_path / "c.h5", X, y)
    out = api.fit_head(path, "logreg", reporter=None).save(tmp_path / "m")
    with open(out / "rejector.npz", "r+b") as f:
        f.seek(200)
        f.write(b"\0\1\2\3")
    with pytest.raises(ModelError, match="rejector.npz"):
        api.evaluate(out, path, reporter=None)
    run("evaluate", out, path, expect=5)


def test_predict_says_unknown_for_a_far_image_and_no_reject_turns_it_off(tmp_path, cli, weights_file):
    from .conftest import embed_and_fit

    embed_and_fit(tmp_path / "w", weights_file)
    model = tmp_path / "w" / "models" / "logreg"
    manifest = json.loads((model / "manifest.json").read_text())
    assert manifest["rejector"]["method"] == "knn_cosine"
    known = tmp_path / "w" / "data" / "apples" / "apples_000.jpg"
    odd = tmp_path / "odd.png"
    from PIL import Image

    stripes = np.zeros((48, 48, 3), np.uint8)
    stripes[::2] = 255  # black and white lines: nothing like the noisy one-colour training pictures
    Image.fromarray(stripes).save(odd)
    out = json.loads(cli("predict", model, known, odd, "--json").stdout)
    by_path = {p["path"]: p for p in out["predictions"]}
    assert out["rejection"]["threshold"] == pytest.approx(manifest["rejector"]["threshold"])
    assert by_path[str(known)]["unknown"] is False
    assert by_path[str(odd)]["unknown"] is True
    assert by_path[str(odd)]["unknown_score"] > out["rejection"]["threshold"]
    text = cli("predict", model, odd).stdout
    assert text.split("\t")[1].startswith("unknown ")
    plain = json.loads(cli("predict", model, known, odd, "--json", "--no-reject").stdout)
    assert "rejection" not in plain and all("unknown" not in p for p in plain["predictions"])
    header = cli("predict", model, odd, "--format", "csv").stdout.splitlines()[0]
    assert header.endswith(",unknown,unknown_score")
