"""scikit-learn's own estimator checks on every head, and the API checks that apply to Embedder.

A check that cannot apply is listed with the reason, one line each; sklearn then expects it to fail
(xfail), so a head that starts passing it is noticed too."""

from __future__ import annotations

import pytest
from sklearn.utils import estimator_checks as ec
from sklearn.utils.estimator_checks import parametrize_with_checks

from embedflow.embedding import Embedder
from embedflow.heads import DenseHead, KNNHead, LinearSVMHead, make_head

from ..conftest import SIZE

PIPELINE_NOT_APPLICABLE = {
    # logreg and svm are Pipelines; scikit-learn marks these two xfail for Pipeline itself:
    "check_estimators_overwrite_params": "a Pipeline fits the estimators of its `steps` parameter in place",
    "check_dont_overwrite_parameters": "a Pipeline fits the estimators of its `steps` parameter in place",
}


SVM_NOT_APPLICABLE = {
    **PIPELINE_NOT_APPLICABLE,
    # Platt calibration (CalibratedClassifierCV, cv=5, ensemble=False) around the RBF SVC:
    "check_fit2d_1feature": "5-fold calibration needs 5 samples per class; the check fits 10 samples of 3 classes",
    "check_supervised_y_2d": "CalibratedClassifierCV(ensemble=False) fails inside scikit-learn on a column-vector y",
}


DENSE_NOT_APPLICABLE = {
    # The check wants 87% of predictions in the class weighted 1000 (others 0.0001) on unscaled blobs:
    "check_class_weight_classifiers": "not reached in 20 epochs with early stopping on the unweighted validation loss",
}


def expected_failures(estimator) -> dict[str, str]:
    from sklearn.pipeline import Pipeline

    if isinstance(estimator, Pipeline):
        return SVM_NOT_APPLICABLE if "l2" in estimator.named_steps else PIPELINE_NOT_APPLICABLE
    return DENSE_NOT_APPLICABLE if isinstance(estimator, DenseHead) else {}


HEADS = [
    make_head("logreg"),
    make_head("svm"),
    LinearSVMHead(),  # the svm head's classifier above SVM_RBF_MAX_CLASSES classes (or --kernel linear)
    KNNHead(),
    KNNHead(space="lda"),
    DenseHead(epochs=20, patience=3, learning_rate=0.05),  # fast: the checks test the API (and fit blobs)
]


@parametrize_with_checks(HEADS, expected_failed_checks=expected_failures)
def test_heads_pass_sklearn_estimator_checks(estimator, check):
    check(estimator)


# Embedder takes images, not a feature matrix (its tags say so): every check that fits or transforms
# feeds 2-d float arrays and cannot apply. The checks of construction, parameters, cloning and the
# unfitted state do, and run here; fitting and transforming are tested in tests/embedding/.
EMBEDDER_CHECKS = [ec.check_estimator_cloneable, ec.check_estimator_tags_renamed, ec.check_valid_tag_types,
                   ec.check_estimator_repr, ec.check_no_attributes_set_in_init,
                   ec.check_parameters_default_constructible, ec.check_get_params_invariance, ec.check_set_params,
                   ec.check_do_not_raise_errors_in_init_or_set_params, ec.check_mixin_order,
                   ec.check_estimators_unfitted]


@pytest.mark.parametrize("check", EMBEDDER_CHECKS, ids=lambda c: c.__name__)
def test_embedder_passes_the_checks_that_apply(check, weights_file):
    check("Embedder", Embedder(image_size=SIZE, weights=str(weights_file)))


def test_embedder_declares_images_as_its_input():
    from sklearn.utils import get_tags

    tags = get_tags(Embedder())
    assert not tags.input_tags.two_d_array and tags.requires_fit
