"""A head trained on cached vectors (kind "cached-head"): the classifier, its folder (saving, loading)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..__about__ import __version__
from ..errors import ModelError
from .classifier import Classifier
from .manifest import read_manifest, read_member, sha256_file, validate_manifest


class HeadClassifier(Classifier):
    """A scikit-learn head (logreg, svm, dense, knn) on the vectors of a frozen backbone.

    `predict_proba_vectors(X)` scores vectors (N, D) from a cache of the same fingerprint;
    `predict_pixels`/`predict_proba` embed images first with the backbone, through the same embedder as
    `embed` (`runtime`: auto = LiteRT on a CPU, litert, keras)."""

    def __init__(self, estimator, manifest: dict, path: Path | None = None, *, runtime: str = "auto"):
        super().__init__({"kind": "cached-head", **manifest}, path)
        self.estimator_ = estimator
        self.runtime = runtime
        self.report_: dict | None = None  # the validation report of fit_head (None when loaded or val_split=0)
        self._embedder = None

    @property
    def estimator(self):
        return self.estimator_

    @property
    def head(self) -> str:
        return self.manifest.get("head", "")

    def predict_proba_vectors(self, X: np.ndarray) -> np.ndarray:
        """float32 (N, len(classes_)) probabilities for vectors X (N, D) of this model's backbone."""
        return self._proba_vectors(X).astype(np.float32)

    def _proba_vectors(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32)
        out = np.zeros((len(X), len(self.classes)))
        if not len(X):
            return out
        proba = np.asarray(self.estimator_.predict_proba(X))
        out[:, [int(c) for c in self.estimator_.classes_]] = proba
        return out

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """float32 (N, D) backbone vectors of uint8 pixels (N, S, S, 3), batch by batch."""
        from ..embedding import checked, preferred_batch

        embedder = self.embedder
        step = preferred_batch(embedder)
        dim = int(self.fingerprint.get("output_dim") or 0)
        parts = []
        for i in range(0, len(pixels), step):
            batch = np.ascontiguousarray(pixels[i:i + step], dtype=np.uint8)
            out = embedder(batch)
            parts.append(checked(out, len(batch), dim) if dim else np.asarray(out, np.float32))
        return np.concatenate(parts) if parts else np.zeros((0, dim), np.float32)

    @property
    def embedder(self):
        """The backbone's embedder (made on first use), the one `embed` uses for this fingerprint."""
        return self.backbone_embedder()

    def backbone_embedder(self, reporter=None):
        """The embedder, made on first use with `reporter` told about a first LiteRT conversion."""
        if self._embedder is None:
            from .. import backbones

            spec = backbones.spec_from_fingerprint(self.fingerprint)
            self._embedder = backbones.make_embedder(spec, self.fingerprint, runtime=self.runtime, reporter=reporter)
        return self._embedder

    def predict_pixels(self, pixels: np.ndarray) -> np.ndarray:
        return self._proba_vectors(self.embed_pixels(pixels))

    def _write_members(self, staged: Path) -> dict:
        from ..heads import dumps_sklearn

        head_file = "head.joblib"  # every head, dense too (folders before issue #20 hold a dense head.keras)
        (staged / head_file).write_bytes(dumps_sklearn(self.estimator_))
        self.manifest["head_file"] = head_file
        return {head_file: sha256_file(staged / head_file)}

    def _manifest_for_save(self) -> dict:
        m = super()._manifest_for_save()
        order = ["kind", "head", "head_file", "classes", "fingerprint"]
        return {**{k: m[k] for k in order if k in m}, "embedflow_version": __version__,
                **{k: v for k, v in m.items() if k not in order and k not in ("embedflow_version", "created_utc")}}

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_embedder"] = None  # interpreters do not pickle; made again on first use
        return state


LoadedModel = HeadClassifier  # the name before the Classifier interface


def from_manifest(model_dir: Path, manifest: dict, *, runtime: str = "auto") -> HeadClassifier:
    """The head of a model folder whose manifest was read, validated and trusted (load_model decides)."""
    if manifest.get("kind", "cached-head") != "cached-head":
        raise ModelError(f"{model_dir} is a {manifest['kind']} model, which runs on images, not on cached vectors")
    name = manifest["head_file"]
    data = read_member(model_dir, manifest, name)
    try:
        est = _load_head(data, name, manifest)
    except ModelError:
        raise
    except Exception as e:  # noqa: BLE001 - a file that matches its hash but is not a head (a forged manifest)
        raise ModelError(f"cannot load {model_dir / name}: {type(e).__name__}: {e}".splitlines()[0]) from None
    _check_head(est, manifest, model_dir / name)
    return HeadClassifier(est, manifest, model_dir, runtime=runtime)


def _load_head(data: bytes, name: str, manifest: dict):
    if name.endswith(".keras"):  # a dense head saved before issue #20: its Keras layer becomes a numpy DenseHead
        from ..heads.dense import dense_head_from_keras, dense_head_from_weights, keras_file_dense_weights

        n_classes = len(manifest["classes"])
        weights = keras_file_dense_weights(data)  # read without Keras (seconds and ~700 MB saved per run)
        if weights is not None:
            return dense_head_from_weights(*weights, n_classes, manifest.get("hyperparameters"))
        from .keras_parts import load_keras_bytes

        model = load_keras_bytes(data, name, n_classes, compile=False)
        return dense_head_from_keras(model, n_classes, manifest.get("hyperparameters"))
    import io

    import joblib

    return joblib.load(io.BytesIO(data))


def _check_head(est, manifest: dict, where: Path) -> None:
    """A loaded object must be a fitted head of exactly this folder's classes (classes_ == 0 .. n-1 for the
    manifest's n classes) that takes vectors of the fingerprint's output_dim (its n_features_in_, where it
    has one): else ModelError, exit 5 (a pickle of something else, or a head of other data, under a forged
    or mismatched manifest)."""
    from sklearn.base import BaseEstimator

    n_classes = len(manifest["classes"])
    classes = getattr(est, "classes_", None)
    try:
        codes = np.asarray(classes)
        ok = isinstance(est, BaseEstimator) and callable(getattr(est, "predict_proba", None)) \
            and codes.ndim == 1 and len(codes) > 0 and codes.dtype.kind in "iu"
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ModelError(f"{where} holds a {type(est).__name__}, not a fitted head of this folder's "
                         f"{n_classes} classes: damaged or tampered with")
    if len(codes) != n_classes or not np.array_equal(codes, np.arange(n_classes)):
        raise ModelError(f"{where} holds a head of {len(codes)} class(es) {_codes_text(codes)}, but the manifest "
                         f"lists {n_classes} (0..{n_classes - 1}): not this folder's head")
    dim = (manifest.get("fingerprint") or {}).get("output_dim")
    n_in = _n_features(est)
    if isinstance(dim, int) and not isinstance(dim, bool) and n_in is not None and n_in != dim:
        raise ModelError(f"{where} holds a head trained on {n_in}-d vectors, but the model's backbone "
                         f"(fingerprint output_dim) gives {dim}-d vectors: not this folder's head")


def _codes_text(codes: np.ndarray) -> str:
    shown = ", ".join(str(int(c)) for c in codes[:8])
    return f"[{shown}{', ...' if len(codes) > 8 else ''}]"


def _n_features(est) -> int | None:
    """The input width a fitted head expects: sklearn's n_features_in_ (None when it has none)."""
    n = getattr(est, "n_features_in_", None)
    try:
        return int(n) if n is not None else None
    except (TypeError, ValueError):
        return None
