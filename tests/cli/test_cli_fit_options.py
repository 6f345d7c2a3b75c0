"""`embedflow fit` options through the CLI, each checked by its effect on the saved head: --C, --seed,
--no-refit, --class-weight (the saved estimator equals the one scikit-learn trains with that setting)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from embedflow import cache
from embedflow.heads import make_head
from embedflow.models import load_model

from ..conftest import CLASS_COLOURS, make_dataset, make_image


@pytest.fixture
def embedded(cli, tmp_path):
    """18 images in 3 classes, embedded with the tiny backbone; returns the cache's rows."""
    make_dataset(tmp_path / "data", per_class=6)
    cli("embed", tmp_path / "data", "--quiet")
    return cache.load("cache/embeddings.h5")


def saved(path):
    model = load_model(path)
    return model.manifest, model.estimator_


def proba(estimator, X):
    return estimator.predict_proba(X)


def test_fit_C_reaches_the_estimator_and_changes_the_head(cli, embedded):
    X, y = embedded.embeddings, np.asarray(embedded.labels)
    cli("fit", "--head", "logreg", "--C", "0.001", "--out", "models/weak", "--quiet")
    cli("fit", "--head", "logreg", "--C", "100", "--out", "models/strong", "--quiet")
    (weak_manifest, weak), (strong_manifest, strong) = saved("models/weak"), saved("models/strong")
    assert weak_manifest["hyperparameters"]["clf__C"] == 0.001 and strong.named_steps["clf"].C == 100
    # the refit head is scikit-learn's logreg at that C on all vectors
    np.testing.assert_allclose(proba(weak, X), proba(make_head("logreg", C=0.001).fit(X, y), X), atol=1e-6)
    np.testing.assert_allclose(proba(strong, X), proba(make_head("logreg", C=100).fit(X, y), X), atol=1e-6)
    # weaker regularisation: larger weights, more confident probabilities
    assert np.linalg.norm(strong.named_steps["clf"].coef_) > 10 * np.linalg.norm(weak.named_steps["clf"].coef_)
    assert proba(strong, X).max(axis=1).mean() > proba(weak, X).max(axis=1).mean()
    refused = cli("fit", "--head", "knn", "--C", "1", expect=2)
    assert "takes no parameter 'C'" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1


def test_fit_seed_chooses_the_split_and_no_refit_keeps_the_split_trained_head(cli, embedded):
    X, y = embedded.embeddings, np.asarray(embedded.labels)
    cli("fit", "--head", "logreg", "--seed", "3", "--no-refit", "--out", "models/s3", "--json")
    cli("fit", "--head", "logreg", "--seed", "3", "--no-refit", "--out", "models/s3-again", "--quiet")
    cli("fit", "--head", "logreg", "--seed", "4", "--out", "models/s4", "--quiet")
    (m3, head3), (again, _), (m4, head4) = saved("models/s3"), saved("models/s3-again"), saved("models/s4")
    assert m3["split"]["seed"] == 3 and m4["split"]["seed"] == 4
    assert m3["split"]["val_keys"] == again["split"]["val_keys"]  # the seed decides the split ...
    assert set(m3["split"]["val_keys"]) != set(m4["split"]["val_keys"])  # ... and another seed changes it
    val3 = np.isin(embedded.keys, m3["split"]["val_keys"])
    assert 0 < val3.sum() < len(y)
    # --no-refit: the saved head is the one the report scored, trained on the seed-3 training rows only
    assert m3["split"]["refit_on_all"] is False and m4["split"]["refit_on_all"] is True
    np.testing.assert_allclose(proba(head3, X), proba(make_head("logreg").fit(X[~val3], y[~val3]), X), atol=1e-6)
    assert m3["metrics"]["accuracy"] == pytest.approx(np.mean(head3.predict(X[val3]) == y[val3]))
    # the default refit: trained on all 18 vectors, which differs from the split-trained head
    np.testing.assert_allclose(proba(head4, X), proba(make_head("logreg").fit(X, y), X), atol=1e-6)
    assert np.abs(proba(head4, X) - proba(head3, X)).max() > 1e-3


def test_fit_class_weight_balanced_reweights_a_small_class(cli, tmp_path):
    data = make_dataset(tmp_path / "data", per_class=12, classes=("apples", "limes"))
    for i in range(3):  # a small third class
        make_image(data / "plums" / f"plums_{i}.png", CLASS_COLOURS["plums"], 900 + i)
    cli("embed", data, "--quiet")
    held = cache.load("cache/embeddings.h5")
    X, y = held.embeddings, np.asarray(held.labels)
    cli("fit", "--head", "logreg", "--C", "0.01", "--class-weight", "balanced", "--val-split", "0",
        "--out", "models/balanced", "--quiet")
    cli("fit", "--head", "logreg", "--C", "0.01", "--val-split", "0", "--out", "models/plain", "--quiet")
    (bm, balanced), (pm, plain) = saved("models/balanced"), saved("models/plain")
    assert bm["hyperparameters"]["class_weight"] == "balanced" and pm["hyperparameters"]["class_weight"] is None
    assert balanced.named_steps["clf"].class_weight == "balanced"
    want = make_head("logreg", C=0.01, class_weight="balanced").fit(X, y)
    np.testing.assert_allclose(proba(balanced, X), proba(want, X), atol=1e-6)
    plums = held.classes.index("plums")
    # balanced weights lift the rare class's probability on its own images
    assert proba(balanced, X)[y == plums, plums].mean() > proba(plain, X)[y == plums, plums].mean() + 0.01
    bad = cli("fit", "--head", "logreg", "--class-weight", "heavy", expect=2)
    assert "balanced" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_fit_json_reports_the_options_it_used(cli, tmp_path):
    # svm's Platt calibration is cross-validated 5-fold: every class needs 5 training images
    make_dataset(tmp_path / "data", per_class=8)
    cli("embed", tmp_path / "data", "--quiet")
    out = json.loads(cli("fit", "--head", "svm", "--C", "3", "--seed", "2", "--json").stdout)
    manifest, svm = saved("models/svm")
    assert svm.named_steps["clf"].estimator.C == 3 and svm.named_steps["clf"].estimator.random_state == 2
    assert manifest["split"]["seed"] == 2 and out["report"]["accuracy"] == manifest["metrics"]["accuracy"]


def test_fit_help_gives_each_heads_defaults_from_the_heads_table():
    """--C, --epochs and --k depend on the head: the help says each head's default, from heads.DEFAULTS (and
    the svm's per-kernel C); the README synopsis does not claim logreg's C for every head."""
    from embedflow.heads import DEFAULTS
    from embedflow.heads.kinds import SVM_DEFAULT_C

    from ..conftest import ROOT, invoke

    text = " ".join(invoke("fit", "--help").stdout.split())
    for words in (f"logreg {DEFAULTS['logreg']['C']:g}", f"{SVM_DEFAULT_C['rbf']:g} with the rbf kernel",
                  f"{SVM_DEFAULT_C['linear']:g} with the linear kernel", f"dense {DEFAULTS['dense']['epochs']}",
                  f"knn; default {DEFAULTS['knn']['k']}"):
        assert words in text, (words, text)
    synopsis = (ROOT / "README.md").read_text().split("### fit", 1)[1].split("```")[1]
    assert "[--C 0.03]" not in synopsis and "[--C C]" in synopsis, synopsis
