"""Embedder: the backbone as a scikit-learn transformer (same vectors and fingerprint as `embed`), and
to_pixels, which turns paths, PIL images and arrays into the pixels `embed` would use."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from PIL import Image

from embedflow import api, cache
from embedflow.data import load_image
from embedflow.data.pixels import to_pixels
from embedflow.embedding import Embedder, ImageInputError

from ..conftest import CLASS_COLOURS, SIZE, make_dataset, make_image


def coloured_arrays(per_class: int, classes=("apples", "limes", "plums"), seed: int = 0):
    """uint8 (N, 48, 64, 3) class-coloured noisy pictures of different content, and their labels."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for c in classes:
        for _ in range(per_class):
            arr = np.array(CLASS_COLOURS[c])[None, None, :] + rng.normal(0, 25, (48, 64, 3))
            x = int(rng.integers(0, 56))
            arr[:, x:x + 6] = 255 - arr[:, x:x + 6]
            images.append(np.clip(arr, 0, 255).astype(np.uint8))
            labels.append(c)
    return np.stack(images), np.array(labels)


@pytest.fixture
def embedder(weights_file):
    return Embedder(image_size=SIZE, weights=str(weights_file))


def test_pipeline_fits_predicts_and_cross_validates(embedder):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline

    from sklearn.preprocessing import StandardScaler

    X, y = coloured_arrays(10)
    pipe = make_pipeline(embedder, StandardScaler(), LogisticRegression(max_iter=2000))
    scores = cross_val_score(pipe, X, y, cv=5)
    # Random backbone weights (0.73-0.79 measured), yet well above the 1/3 of constant or shuffled vectors.
    assert scores.shape == (5,) and scores.mean() >= 0.55, scores
    held_out, truth = coloured_arrays(4, seed=7)
    assert (pipe.fit(X, y).predict(held_out) == truth).mean() >= 0.55
    assert pipe.predict_proba(held_out).shape == (12, 3)


def test_vectors_and_fingerprint_are_those_of_embed(embedder, weights_file, tmp_path):
    data = make_dataset(tmp_path / "data", per_class=3)
    path = tmp_path / "c.h5"
    api.embed_folder(data, path, image_size=SIZE, weights=str(weights_file), reporter=None)
    held = cache.load(path)
    files = [data / k for k in held.keys]
    X = embedder.fit(files).transform(files)
    assert X.dtype == np.float32 and X.shape == (len(files), embedder.n_features_out_) == held.embeddings.shape
    np.testing.assert_allclose(X, held.embeddings, rtol=0, atol=1e-5)
    assert embedder.fingerprint_["id"] == held.fingerprint["id"]
    pil = [Image.open(f) for f in files]
    np.testing.assert_allclose(embedder.transform(pil), X, atol=1e-5)  # PNG/JPEG opened by the caller
    np.testing.assert_allclose(embedder.transform(np.stack([load_image(f, SIZE) for f in files])), X, atol=1e-5)
    assert embedder.transform([]).shape == (0, embedder.n_features_out_)
    assert list(embedder.get_feature_names_out()[:2]) == ["embedding0", "embedding1"]


def test_clone_and_pickle_leave_the_runtime_behind(embedder):
    from sklearn.base import clone
    from sklearn.exceptions import NotFittedError

    X, _ = coloured_arrays(2)
    want = embedder.fit(X).transform(X)
    assert embedder._runner is not None
    copy = pickle.loads(pickle.dumps(embedder))
    assert getattr(copy, "_runner", None) is None and copy.fingerprint_ == embedder.fingerprint_
    np.testing.assert_allclose(copy.transform(X), want, atol=1e-6)
    fresh = clone(embedder)
    assert fresh.get_params() == embedder.get_params() and not hasattr(fresh, "fingerprint_")
    with pytest.raises(NotFittedError):
        fresh.transform(X)


def test_bad_images_are_refused_with_one_line(embedder, tmp_path):
    embedder.fit()
    with pytest.raises(ImageInputError, match="uint8"):
        embedder.transform(np.zeros((2, 8, 8, 3), np.float32))
    missing = tmp_path / "gone.jpg"
    with pytest.raises(ImageInputError, match="gone.jpg"):
        embedder.transform([missing])
    text = tmp_path / "text.jpg"
    text.write_text("not an image")
    with pytest.raises(ImageInputError, match="text.jpg: not an image file"):
        embedder.transform([text])
    with pytest.raises(ImageInputError, match="list of images"):
        embedder.transform(str(text))
    with pytest.raises(ValueError):  # also a ValueError, scikit-learn's convention
        embedder.transform([np.zeros((4, 4), np.uint8)])


def test_bad_parameters_fail_at_fit(weights_file):
    from embedflow.errors import UsageError, WeightsError

    with pytest.raises(UsageError, match="runtime"):
        Embedder(runtime="gpu", weights=str(weights_file), image_size=SIZE).fit()
    with pytest.raises(UsageError, match="image-size"):
        Embedder(image_size=12, weights=str(weights_file)).fit()
    with pytest.raises(WeightsError):
        Embedder(weights="/nowhere/w.h5", image_size=SIZE).fit()


def test_to_pixels_paths_pil_images_and_arrays_agree(tmp_path):
    rgb = make_image(tmp_path / "a.png", (200, 40, 40), 1)
    rgba = tmp_path / "rgba.png"
    Image.open(rgb).convert("RGBA").save(rgba)
    rotated = tmp_path / "rot.jpg"
    img = Image.open(rgb)
    exif = img.getexif()
    exif[0x0112] = 6  # rotated 90 degrees: shown as 48x64
    img.save(rotated, exif=exif.tobytes(), quality=95)
    for path in (rgb, rgba, rotated):
        from_path = to_pixels([path], SIZE)
        assert from_path.shape == (1, SIZE, SIZE, 3) and from_path.dtype == np.uint8
        np.testing.assert_array_equal(to_pixels([Image.open(path)], SIZE), from_path)
    np.testing.assert_array_equal(to_pixels([np.asarray(Image.open(rgb))], SIZE), to_pixels([rgb], SIZE))
    opened = Image.open(rotated)
    before = opened.size
    to_pixels([opened], SIZE)
    assert opened.size == before  # the caller's image is not rotated in place
    batch = np.zeros((2, SIZE, SIZE, 3), np.uint8)
    assert to_pixels(batch, SIZE) is batch  # already the right size: no copy
    assert to_pixels(np.zeros((2, 30, 40, 3), np.uint8), SIZE).shape == (2, SIZE, SIZE, 3)
