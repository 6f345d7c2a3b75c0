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
        from ..heads import DenseHead, dumps_sklearn

        if isinstance(self.estimator_, DenseHead):
            head_file = "head.keras"
            self.estimator_.model_.save(staged / head_file)
        else:
            head_file = "head.joblib"
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
    if name.endswith(".keras"):
        from ..heads import DenseHead
        from .keras_parts import load_keras_bytes

        est = DenseHead(**{k: v for k, v in manifest.get("hyperparameters", {}).items()
                           if k in DenseHead().get_params()})
        est.model_ = load_keras_bytes(data, name, len(manifest["classes"]), compile=True)
        est.classes_ = np.arange(len(manifest["classes"]))
        return est
    import io

    import joblib

    return joblib.load(io.BytesIO(data))


def _check_head(est, manifest: dict, where: Path) -> None:
    """A loaded object must be a fitted head of this folder's classes: else ModelError (a pickle of
    something else under a forged manifest)."""
    from sklearn.base import BaseEstimator

    classes = getattr(est, "classes_", None)
    try:
        codes = np.asarray(classes)
        ok = isinstance(est, BaseEstimator) and callable(getattr(est, "predict_proba", None)) \
            and codes.ndim == 1 and len(codes) > 0 and codes.dtype.kind in "iu" \
            and int(codes.min()) >= 0 and int(codes.max()) < len(manifest["classes"])
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ModelError(f"{where} holds a {type(est).__name__}, not a fitted head of this folder's "
                         f"{len(manifest['classes'])} classes: damaged or tampered with")
