"""The notebook session, end to end on small synthetic images: open_cache -> fit_head -> predict_proba on a
PIL image, a path and a uint8 array -> save -> load_model, for every kind of Classifier."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from ..conftest import SIZE, make_dataset


@pytest.fixture(scope="module")
def session(tmp_path_factory, weights_file):
    from embedflow import embed_folder

    root = tmp_path_factory.mktemp("notebook")
    data = make_dataset(root / "data", per_class=8)
    cache_path = root / "cache" / "embeddings.h5"
    embed_folder(data, cache_path, image_size=SIZE, weights=str(weights_file))
    return root, data, cache_path


def _three_ways(data):
    """One picture as a path, as a PIL image and as a uint8 array at its own size."""
    path = data / "limes" / "limes_003.jpg"
    pil = Image.open(path)
    return str(path), pil, np.asarray(pil.convert("RGB"))[None]


def _check_same_picture_same_answer(clf, data):
    path, pil, arr = _three_ways(data)
    by_path, by_pil, by_array = (clf.predict_proba(x) for x in ([path], [pil], arr))
    assert by_path.dtype == np.float32 and by_path.shape == (1, len(clf.classes_))
    np.testing.assert_allclose(by_pil, by_path, atol=1e-6)
    np.testing.assert_allclose(by_array, by_path, atol=1e-6)
    np.testing.assert_allclose(by_path.sum(axis=1), 1.0, atol=1e-5)
    return by_path


@pytest.mark.parametrize("head,params", [("logreg", {"C": 0.5}), ("svm", {"C": 3.0}), ("knn", {"k": 3}),
                                         ("dense", {"epochs": 30})])
def test_each_head_fits_in_memory_predicts_images_and_round_trips(session, tmp_path, head, params):
    from embedflow import Classifier, fit_head, load_model, open_cache

    root, data, cache_path = session
    cache = open_cache(cache_path)
    assert len(cache) == 24 and cache.X.shape == (24, cache.fingerprint["output_dim"]) and cache.X.dtype == np.float32
    assert cache.y.dtype == np.int64 and cache.classes == ["apples", "limes", "plums"]
    clf = fit_head(cache, head=head, **params)
    assert isinstance(clf, Classifier) and clf.kind == "cached-head" and clf.path is None
    assert list(clf.classes_) == ["apples", "limes", "plums"] and clf.fingerprint == cache.fingerprint
    assert clf.report_["n"] == clf.split_["n_val"] == 5 and clf.split_["n_train"] == 19
    assert len(clf.split_["val_keys"]) == 5 and set(clf.split_["val_keys"]) <= set(cache.keys)
    before = _check_same_picture_same_answer(clf, data)
    assert clf.predict([_three_ways(data)[0]])[0] == "limes"
    assert not any(tmp_path.iterdir())  # nothing was written yet

    folder = clf.save(tmp_path / head)
    assert {"manifest.json", "report.json", "confusion.json", "confusion.png"} <= set(os.listdir(folder))
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["head"] == head and manifest["split"]["val_keys"] == clf.split_["val_keys"]
    recorded = manifest["hyperparameters"]  # scikit-learn's deep names: C of a Pipeline step is clf__C
    assert all(v in [recorded[name] for name in recorded if name == k or name.endswith(f"__{k}")]
               for k, v in params.items())
    loaded = load_model(folder)
    assert type(loaded).__name__ == "HeadClassifier" and loaded.kind == "cached-head"
    np.testing.assert_allclose(_check_same_picture_same_answer(loaded, data), before, atol=1e-6)
    np.testing.assert_allclose(loaded.predict_proba_vectors(cache.X), clf.predict_proba_vectors(cache.X), atol=1e-5)


def test_a_parameter_the_head_does_not_take_is_one_usage_error(session):
    from embedflow import fit_head
    from embedflow.errors import UsageError

    with pytest.raises(UsageError, match=r"the svm head takes no parameter 'epochs' \(its parameters: C, kernel\)"):
        fit_head(session[2], head="svm", epochs=3)


def test_fused_and_tflite_exports_load_as_classifiers_and_warn_when_the_cache_changed(session, tmp_path, weights_file):
    from embedflow import embed_folder, evaluate, export, fit_head, load_model, predict
    from embedflow.progress import ListReporter

    root, data, cache_path = session
    head = fit_head(cache_path, head="logreg", C=0.5)
    head.save(tmp_path / "logreg")
    want = head.predict_proba([_three_ways(data)[0]])

    rep = ListReporter()
    fused_result = export(head, "keras", out=tmp_path / "fused", reporter=rep)
    assert not rep.warnings and fused_result.parity["fused_keras"]["top1_agreement"] == 1.0
    fused = load_model(tmp_path / "fused")
    assert fused.kind == "fused" and list(fused.classes_) == list(head.classes_)
    np.testing.assert_allclose(_check_same_picture_same_answer(fused, data), want, atol=2e-3)
    fused.save(tmp_path / "fused-copy")
    np.testing.assert_allclose(load_model(tmp_path / "fused-copy").predict_proba([_three_ways(data)[0]]),
                               fused.predict_proba([_three_ways(data)[0]]), atol=1e-6)

    # the data changes after fit: one validation image removed, another edited; the cache is brought up to date
    work = tmp_path / "data"
    import shutil

    shutil.copytree(data, work)
    gone, edited = head.split_["val_keys"][:2]
    (work / gone).unlink()
    Image.open(work / edited).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(work / edited)
    changed_cache = tmp_path / "changed.h5"
    shutil.copy(cache_path, changed_cache)
    embed_folder(work, changed_cache, image_size=SIZE, weights=str(weights_file))
    rep = ListReporter()
    result = export(tmp_path / "logreg", "tflite", cache_path=changed_cache, data=work, reporter=rep)
    assert any("1 are missing and 1 changed content" in w for w in rep.warnings), rep.warnings
    assert result.parity["tflite"]["n"] == 4
    tfl = load_model(result.out_dir)
    assert tfl.kind == "tflite"
    np.testing.assert_allclose(_check_same_picture_same_answer(tfl, data), want, atol=2e-3)
    tfl.save(tmp_path / "tflite-copy")
    np.testing.assert_allclose(load_model(tmp_path / "tflite-copy").predict_proba([_three_ways(data)[0]]),
                               tfl.predict_proba([_three_ways(data)[0]]), atol=1e-6)
    bare = load_model(result.out_dir / "model.tflite")  # a bare .tflite: its folder's manifest names it
    assert bare.kind == "tflite"

    # evaluate and predict work on the objects, and write nothing unless asked
    report = evaluate(tfl, data)
    assert report.to_dict()["n"] == 24 and report.accuracy == report["accuracy"]
    assert not (tmp_path / "tflite" / "eval-report.json").exists()
    labels = predict(tfl, [str(data / "plums")], top_k=2).to_dict()
    assert len(labels["predictions"]) == 8 and len(labels["predictions"][0]["top"]) == 2


def test_a_finetuned_model_loads_predicts_images_and_round_trips(session, tmp_path, weights_file):
    from embedflow import finetune, load_model

    root, data, _ = session
    result = finetune(data, tmp_path / "finetuned", image_size=SIZE, weights=str(weights_file),
                      params={"epochs": 1, "fine_tune_epochs": 1, "unfreeze_top": 10, "batch_size": 8,
                              "average_from": 0, "patience": 0, "refit": False, "flip_tta": False})
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # written through the staged folder
    clf = load_model(result.model_dir)
    assert clf.kind == "finetuned" and list(clf.classes_) == ["apples", "limes", "plums"] and clf.image_size == SIZE
    assert len(clf.split_["val_keys"]) == len(clf.split_["val_hashes"]) == result.n_val == 5
    before = _check_same_picture_same_answer(clf, data)
    clf.save(tmp_path / "copy")
    copy = load_model(tmp_path / "copy")
    assert copy.kind == "finetuned" and (tmp_path / "copy" / "report.json").is_file()
    np.testing.assert_allclose(_check_same_picture_same_answer(copy, data), before, atol=1e-6)
