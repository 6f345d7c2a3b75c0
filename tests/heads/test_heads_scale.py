"""Issue #20 (heads that scale with classes): the svm head is an RBF SVM up to SVM_RBF_MAX_CLASSES classes
and LinearSVMHead above (one-vs-rest squared hinge, temperature-scaled on a held-out 20%), unless --kernel
says; the dense head's batch
grows with N so an epoch stays ~64 steps. Small synthetic caches (no backbone); times are in
benchmarks/heads_scale.py, not here."""

from __future__ import annotations

import json

import numpy as np
import pytest

from embedflow import api
from embedflow.heads import DenseHead, LinearSVMHead, make_head
from embedflow.heads.kinds import SVM_RBF_MAX_CLASSES, check_trainable

from .test_heads_tiny_classes import tiny_cache


def svm_parts(clf):
    """(the SVM, its Platt folds or None for LinearSVMHead's temperature scaling)."""
    pipeline = clf.estimator if hasattr(clf, "estimator") else clf
    step = pipeline.named_steps["clf"]
    return (step, None) if isinstance(step, LinearSVMHead) else (step.estimator, step.cv)


@pytest.mark.parametrize("n_classes,kernel,want", [
    (SVM_RBF_MAX_CLASSES, "auto", "rbf"), (SVM_RBF_MAX_CLASSES + 1, "auto", "linear"),
    (3, "linear", "linear"), (SVM_RBF_MAX_CLASSES + 1, "rbf", "rbf")])
def test_svm_kernel_follows_the_classes_unless_given(n_classes, kernel, want):
    from sklearn.svm import SVC

    y = np.repeat(np.arange(n_classes), 6)
    head = check_trainable("svm", make_head("svm", kernel=kernel, seed=3), y, [f"c{i}" for i in range(n_classes)])
    svc, folds = svm_parts(head)
    assert head.svm_kernel_ == want
    assert isinstance(svc, LinearSVMHead if want == "linear" else SVC)
    assert folds == (None if want == "linear" else 5)
    assert svc.C == (1.0 if want == "linear" else 10.0) and svc.random_state == 3
    assert head.svm_calibration_ == ("temperature (20% held out)" if want == "linear" else "sigmoid (Platt, 5-fold)")


def test_a_given_c_is_used_by_either_kernel():
    y = np.repeat(np.arange(12), 3)
    head = check_trainable("svm", make_head("svm", C=0.25), y, [f"c{i}" for i in range(12)])
    assert svm_parts(head)[0].C == 0.25
    assert svm_parts(check_trainable("svm", make_head("svm", C=0.25), y[:9], ["a", "b", "c"]))[0].C == 0.25


def test_many_classes_fit_a_calibrated_linear_svm_and_the_manifest_says_so(tmp_path):
    path = tiny_cache(tmp_path / "many.h5", [8] * 14)
    clf = api.fit_head(path, "svm", val_split=0.25, reporter=None)
    assert clf.manifest["hyperparameters"]["kernel"] == "linear"
    assert clf.manifest["hyperparameters"]["calibration"] == "temperature (20% held out)"
    assert "clf__cv" not in clf.manifest["hyperparameters"]
    from embedflow.reports.model_card import CARD_FILE, deploy_files

    card = deploy_files(clf.manifest)[CARD_FILE]
    assert "calibration=temperature (20% held out)" in card
    assert "linear one-vs-rest kernel, temperature (20% held out) probabilities" in card
    assert clf.report_["accuracy"] > 0.6  # clustered classes (chance: 1/14)
    np.testing.assert_allclose(clf.val_proba_.sum(axis=1), 1.0, rtol=1e-6)


def test_cli_kernel_option_and_its_one_line_errors(cli, tmp_path):
    tiny_cache(tmp_path / "c.h5", (6, 6, 6))
    cli("fit", "--cache", tmp_path / "c.h5", "--head", "svm", "--kernel", "linear", "--val-split", "0",
        "--out", tmp_path / "m")
    assert json.loads((tmp_path / "m" / "manifest.json").read_text())["hyperparameters"]["kernel"] == "linear"
    r = cli("fit", "--cache", tmp_path / "c.h5", "--head", "svm", "--kernel", "poly", expect=2)
    assert "kernel must be one of auto, rbf, linear" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = cli("fit", "--cache", tmp_path / "c.h5", "--head", "logreg", "--kernel", "linear", expect=2)
    assert "takes no parameter 'kernel'" in r.stderr


@pytest.mark.parametrize("n,want", [(100, 32), (32 * 64, 32), (10_000, 157)])
def test_dense_batch_grows_with_n_so_an_epoch_stays_short(n, want):
    rng = np.random.default_rng(0)
    y = np.arange(n) % 4
    X = (np.eye(4, 8)[y] * 3 + rng.normal(0, 1, (n, 8))).astype(np.float32)
    head = DenseHead(epochs=1, validation_fraction=0).fit(X, y)
    assert head.batch_size_ == want
    assert DenseHead(epochs=1, batch_size=8, validation_fraction=0).fit(X[:40], y[:40]).batch_size_ == 8
