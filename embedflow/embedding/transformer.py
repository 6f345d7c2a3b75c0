"""Embedder: the backbone as a scikit-learn transformer, images in, vectors out.

    from sklearn.pipeline import make_pipeline
    from sklearn.linear_model import LogisticRegression
    clf = make_pipeline(Embedder(), LogisticRegression()).fit(paths, labels)
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from .. import backbones
from ..data import BadImage
from ..data.pixels import to_pixels
from ..errors import UsageError


class ImageInputError(UsageError, ValueError):
    """Embedder was given something that is not images (or an image that cannot be read). A UsageError
    (one line and exit 2 in the CLI) and a ValueError (scikit-learn's convention for bad input)."""


class Embedder(TransformerMixin, BaseEstimator):
    """Images -> float32 (N, D) vectors through the same backbone, runtime and fingerprint as `embed`.

    backbone, image_size, weights: as `embed --backbone/--image-size/--weights` (the default is
    MobileNetV2 at 224 px with Keras' ImageNet weights). runtime: "auto" (LiteRT on a CPU, Keras on a
    GPU), "litert" or "keras". batch_size: images per inference call (default: the runtime's own).
    precision: "fp32" (default) or "int8" (a full-integer LiteRT backbone, as `embed --precision int8`:
    the vectors of an int8 cache; runtime "keras" is refused).

    `images` (for fit and transform) is a list of paths, a list of PIL images, a list of uint8 (H, W, 3)
    arrays, or a uint8 array (N, H, W, 3); each is decoded (paths) and resized exactly as `embed` does.
    fit() resolves the backbone and its weights (WeightsError when they are missing, UsageError for a bad
    parameter) and records `spec_`, `fingerprint_` (the dict caches and models record) and
    `n_features_out_` (D); it learns nothing from the images. The inference runtime is created on the
    first transform and is not pickled or cloned (a copy creates its own). transform raises
    ImageInputError naming the first image it cannot use.
    """

    def __init__(self, backbone="mobilenet_v2", image_size=None, weights=None, runtime="auto", batch_size=None,
                 precision="fp32"):
        self.backbone = backbone
        self.image_size = image_size
        self.weights = weights
        self.precision = precision
        self.runtime = runtime
        self.batch_size = batch_size

    def fit(self, images=None, y=None):
        """Resolve the backbone (images and y are ignored: nothing is learned). Returns self."""
        if self.runtime not in ("auto", "keras", "litert"):
            raise UsageError(f"unknown runtime '{self.runtime}': use auto, keras or litert")
        if self.batch_size is not None and int(self.batch_size) < 1:
            raise UsageError(f"batch_size must be at least 1, got {self.batch_size}")
        weights = None if self.weights is None else str(self.weights)
        spec = backbones.get_spec(self.backbone, self.image_size, weights, self.precision)
        fingerprint = backbones.fingerprint(spec)
        if getattr(self, "fingerprint_", {}).get("id") != fingerprint["id"]:
            self._runner = None  # another backbone than the one a runner was made for
        self.spec_, self.fingerprint_, self.n_features_out_ = spec, fingerprint, spec.output_dim
        return self

    def transform(self, images) -> np.ndarray:
        """float32 (N, n_features_out_) vectors of the images, in their order."""
        check_is_fitted(self, "fingerprint_")
        try:
            pixels = to_pixels(images, self.spec_.image_size)
        except (BadImage, UsageError) as e:
            raise ImageInputError(str(e)) from None
        except TypeError as e:  # not a sequence at all
            raise ImageInputError(f"images must be a list of images or a uint8 (N, H, W, 3) array ({e})") from None
        if not len(pixels):
            return np.zeros((0, self.n_features_out_), np.float32)
        run = self._runtime()
        step = int(self.batch_size or getattr(run, "batch_size", 16))
        return np.concatenate([np.asarray(run(pixels[i:i + step]), np.float32) for i in range(0, len(pixels), step)])

    def _runtime(self):
        if getattr(self, "_runner", None) is None:
            self._runner = backbones.make_embedder(self.spec_, self.fingerprint_, runtime=self.runtime)
        return self._runner

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """embedding0 ... embedding{D-1}: names of the output columns (for set_output and pipelines)."""
        check_is_fitted(self, "n_features_out_")
        return np.asarray([f"embedding{i}" for i in range(self.n_features_out_)], dtype=object)

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_runner", None)  # an interpreter or a Keras model: made again where it is needed
        return state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False  # images, not a feature matrix
        tags.input_tags.three_d_array = True
        return tags
