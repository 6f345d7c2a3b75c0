"""The Dense softmax head of the notebook recipe, as a scikit-learn estimator trained in numpy.

The recipe is the one the notebook (and embedflow before issue #20) ran in Keras 3: Dropout on the input,
one softmax Dense layer, Adam, sparse categorical cross-entropy, early stopping with the best weights
restored. Here it is the same arithmetic on float32 numpy arrays (BLAS matrix products), so fitting and
predicting import neither Keras nor TensorFlow (importing Keras alone cost ~4.7 s and ~700 MB). Sources of
each step, in Keras 3.15: initializers GlorotUniform, layers/regularization/dropout.py (inverted dropout),
backend/tensorflow/nn.py sparse_categorical_crossentropy (a softmax output is taken back to its logits),
losses/loss.py reduce_values ("sum_over_batch_size"), data_adapter_utils.class_weight_to_sample_weights,
optimizers/adam.py update_step, callbacks/early_stopping.py.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data
from threadpoolctl import threadpool_limits

ADAM_BETA_1, ADAM_BETA_2, ADAM_EPSILON = 0.9, 0.999, 1e-7  # keras.optimizers.Adam defaults


class DenseHead(ClassifierMixin, BaseEstimator):
    """The notebook recipe's head: Dropout(dropout) on the input vector, then a softmax Dense layer.

    Training (Keras' recipe, reimplemented in numpy; see the module docstring for the sources):
    Glorot-uniform kernel and zero bias drawn from `random_state`; each epoch the training vectors are
    shuffled and cut into mini-batches (the last one smaller); per batch, inverted dropout (each input kept
    with probability 1 - dropout, kept ones scaled by 1 / (1 - dropout)), loss = sum over the batch of
    sample_weight * cross-entropy / batch length (sample_weight from class_weight: "balanced" as
    sklearn's compute_class_weight, or {label: weight}, 1 for labels it does not name), one Adam step
    (beta1 0.9, beta2 0.999, epsilon 1e-7, bias-corrected step size as Keras computes it).
    Early stopping: with validation_fraction of the training vectors held out (stratified, seeded by
    random_state, when every class has 2 and the held-out part has at least one per class) the monitor is
    the mean unweighted cross-entropy on it after each epoch (Keras' val_loss), else the epoch's mean
    weighted training loss (Keras' loss); training stops once `patience` epochs pass without a lower value
    (never after the first epoch) and the weights of the best epoch are restored.

    batch_size None (default): 32, or N / AUTO_BATCH_STEPS for more than 32 * AUTO_BATCH_STEPS training
    vectors, so an epoch is at most ~64 steps and the time per epoch stops growing with N.

    Learned state: `coef_` float32 (n_classes, n_features_in_) and `intercept_` float32 (n_classes,)
    (scikit-learn's orientation; the Keras Dense kernel is coef_.T), probabilities
    softmax(X @ coef_.T + intercept_); `classes_`, `n_features_in_`, `n_epochs_` (epochs run),
    `batch_size_` (the one used), `loss_curve_` (each epoch's mean weighted training loss, Keras'
    history["loss"]). Heads loaded from a Keras file (dense_head_from_keras) have none of the last three."""

    AUTO_BATCH_STEPS = 64

    def __init__(self, dropout=0.2, learning_rate=1e-3, epochs=200, batch_size=None, patience=10,
                 validation_fraction=0.1, class_weight=None, random_state=0):
        self.dropout = dropout
        self.learning_rate = learning_rate
        self.epochs = epochs
        self.batch_size = batch_size
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.class_weight = class_weight
        self.random_state = random_state

    def fit(self, X, y):
        """Train on X (N, D) float vectors and labels y (N,). Returns self. Raises ValueError for a
        dropout outside [0, 1] or a learning_rate, epochs or batch_size that is not positive."""
        X, y = validate_data(self, X, y, dtype=np.float32)  # also n_features_in_; sparse, NaN, 1-d X refused
        check_classification_targets(y)
        self._check_params()
        self.classes_, y_idx = np.unique(y, return_inverse=True)
        X_tr, y_tr, X_es, y_es = self._split(X, y_idx)
        self.batch_size_ = int(self.batch_size or max(32, -(-len(X_tr) // self.AUTO_BATCH_STEPS)))
        weights = self._class_weights(y_idx)[y_tr]
        # One BLAS thread: each step's products are small (batch x D x classes), and OpenBLAS's thread pool
        # made them ~40x slower on 2 busy cores (0.33 ms -> 14 ms per product at 113 x 1280 x 100, console).
        with threadpool_limits(limits=1, user_api="blas"):
            self.coef_, self.intercept_, self.n_epochs_ = self._train(X_tr, y_tr, X_es, y_es, weights)
        return self

    def _train(self, X, y, X_es, y_es, weights) -> tuple[np.ndarray, np.ndarray, int]:
        """(coef, intercept, epochs run): Adam epochs on X (N, D) float32, y (N,) class indices, weights
        (N,) float32 sample weights, early-stopped on the mean cross-entropy of (X_es, y_es), or on the
        training loss when X_es is None (keras.callbacks.EarlyStopping(min_delta=0,
        restore_best_weights=True): the best epoch's weights, also when all epochs ran)."""
        rng = np.random.default_rng(_seed(self.random_state))
        n_classes, dim = len(self.classes_), X.shape[1]
        theta = np.zeros(n_classes * (dim + 1), np.float32)  # coef and intercept: one array, one Adam pass
        coef, intercept = _views(theta, n_classes, dim)
        coef[:] = _glorot_uniform(rng, dim, n_classes)
        adam = _Adam(theta, self.learning_rate)
        best, best_theta, wait, epochs_run = np.inf, None, 0, 0
        self.loss_curve_ = []
        for epoch in range(int(self.epochs)):
            loss = self._epoch(X, y, weights, theta, adam, rng)
            self.loss_curve_.append(loss)
            current = _mean_loss(X_es, y_es, coef, intercept) if X_es is not None else loss
            epochs_run = epoch + 1
            if best_theta is None:
                best_theta = theta.copy()
            wait += 1
            if current < best:
                best, best_theta, wait = current, theta.copy(), 0
            elif wait >= self.patience and epoch > 0:
                break
        coef, intercept = _views(theta if best_theta is None else best_theta, n_classes, dim)
        return coef.copy(), intercept.copy(), epochs_run

    def _check_params(self):
        if not 0 <= self.dropout <= 1:
            raise ValueError(f"dropout must be in [0, 1], got {self.dropout}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        if self.epochs < 0 or (self.batch_size is not None and self.batch_size < 1):
            raise ValueError(f"epochs must be >= 0 and batch_size None or >= 1, got {self.epochs}, {self.batch_size}")

    def _split(self, X, y_idx):
        """(X_train, y_train, X_held_out or None, y_held_out or None): the early-stopping split."""
        from sklearn.model_selection import train_test_split

        counts = np.bincount(y_idx)
        if self.validation_fraction and counts.min() >= 2 and len(X) * self.validation_fraction >= len(self.classes_):
            X_tr, X_es, y_tr, y_es = train_test_split(X, y_idx, test_size=self.validation_fraction,
                                                      stratify=y_idx, random_state=self.random_state)
            return X_tr, y_tr, X_es, y_es
        return X, y_idx, None, None

    def _class_weights(self, y_idx) -> np.ndarray:
        """float32 (n_classes,) weight of each class index (ones without class_weight)."""
        from sklearn.utils.class_weight import compute_class_weight

        if self.class_weight == "balanced":
            return compute_class_weight("balanced", classes=np.arange(len(self.classes_)), y=y_idx).astype(np.float32)
        if isinstance(self.class_weight, dict):  # {label: weight}, 1 for labels it does not name
            return np.array([float(self.class_weight.get(c, 1.0)) for c in self.classes_.tolist()], np.float32)
        return np.ones(len(self.classes_), np.float32)

    def _epoch(self, X, y, weights, theta, adam, rng) -> float:
        """One shuffled pass of mini-batch Adam steps, in place on theta (coef and intercept, _views);
        returns the epoch's mean weighted training loss (each batch's loss taken before its step, as Keras
        logs it)."""
        n_classes, dim = len(self.classes_), X.shape[1]
        coef, intercept = _views(theta, n_classes, dim)
        grad = np.empty_like(theta)
        grad_coef, grad_intercept = _views(grad, n_classes, dim)
        order = rng.permutation(len(X))
        total = 0.0
        for start in range(0, len(X), self.batch_size_):
            idx = order[start:start + self.batch_size_]
            xb, yb, n = X[idx], y[idx], len(idx)  # fancy indexing copies: xb is ours to drop out in place
            if self.dropout >= 1:
                xb[:] = 0
            elif self.dropout > 0:
                xb *= rng.random(xb.shape, dtype=np.float32) >= np.float32(self.dropout)
                xb *= np.float32(1 / (1 - self.dropout))
            logits = xb @ coef.T
            logits += intercept
            proba, losses = _softmax_and_loss(logits, yb)
            wb = weights[idx]
            total += float(wb @ losses)
            proba[np.arange(n), yb] -= 1  # d(cross-entropy)/d(logits) = softmax - one-hot
            proba *= (wb / np.float32(n))[:, None]
            np.matmul(proba.T, xb, out=grad_coef)
            proba.sum(axis=0, out=grad_intercept)
            adam.step(grad)
        return total / len(X)

    def predict_proba(self, X):
        """(N, classes) float64 softmax probabilities, columns in classes_ order."""
        check_is_fitted(self)
        if hasattr(X, "__len__") and len(X) == 0:
            return np.zeros((0, len(self.classes_)))
        X = validate_data(self, X, dtype=np.float32, reset=False)
        logits = (X @ self.coef_.T + self.intercept_).astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        np.exp(logits, out=logits)
        return logits / logits.sum(axis=1, keepdims=True)

    def predict(self, X):
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]

    def __setstate__(self, state):
        """A DenseHead pickled by embedflow before issue #20 carried its Keras model as .keras bytes in
        `model_`: its Dense layer becomes coef_/intercept_ (this one path imports Keras)."""
        if isinstance(state.get("model_"), bytes):
            coef, intercept = keras_dense_weights(keras_from_bytes(state.pop("model_")))
            state["coef_"], state["intercept_"] = coef, intercept
        self.__dict__.update(state)


def _seed(random_state):
    """An int (or None) seed for numpy's Generator from sklearn's random_state (None, int or RandomState)."""
    from sklearn.utils import check_random_state

    if random_state is None or isinstance(random_state, (int, np.integer)):
        return random_state
    return int(check_random_state(random_state).randint(2 ** 31))


def _glorot_uniform(rng, fan_in: int, fan_out: int) -> np.ndarray:
    """float32 (fan_out, fan_in) kernel (transposed Keras layout) ~ U(-l, l), l = sqrt(6 / (fan_in + fan_out))."""
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, (fan_out, fan_in)).astype(np.float32)


def _softmax_and_loss(logits: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(softmax probabilities, per-row cross-entropy -log p[y]) of float32 logits (N, C), computed from the
    logits (as Keras does for a softmax output). `logits` is overwritten."""
    rows = np.arange(len(y))
    logits -= logits.max(axis=1, keepdims=True)
    picked = logits[rows, y].copy()
    np.exp(logits, out=logits)
    sums = logits.sum(axis=1)
    logits /= sums[:, None]
    return logits, np.log(sums) - picked


def _mean_loss(X, y, coef, intercept) -> float:
    """Mean cross-entropy of the head (coef, intercept) on vectors X (N, D) with labels y (no dropout)."""
    logits = X @ coef.T
    logits += intercept
    return float(np.mean(_softmax_and_loss(logits, y)[1], dtype=np.float64))


def _views(theta: np.ndarray, n_classes: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(coef (n_classes, dim), intercept (n_classes,)): views into one flat float32 array."""
    return theta[:n_classes * dim].reshape(n_classes, dim), theta[n_classes * dim:]


class _Adam:
    """Keras 3 Adam (no amsgrad, no weight decay) on one float32 array updated in place:
    m += (g - m)(1 - b1); v += (g^2 - v)(1 - b2); p -= m * lr sqrt(1 - b2^t) / (1 - b1^t) / (sqrt(v) + eps)."""

    def __init__(self, param: np.ndarray, learning_rate: float):
        self.param, self.lr, self.t = param, float(learning_rate), 0
        self.m, self.v, self.tmp = np.zeros_like(param), np.zeros_like(param), np.empty_like(param)

    def step(self, grad: np.ndarray):
        self.t += 1
        alpha = np.float32(self.lr * np.sqrt(1 - ADAM_BETA_2 ** self.t) / (1 - ADAM_BETA_1 ** self.t))
        m, v, tmp = self.m, self.v, self.tmp
        np.subtract(grad, m, out=tmp)
        tmp *= np.float32(1 - ADAM_BETA_1)
        m += tmp
        np.square(grad, out=tmp)
        tmp -= v
        tmp *= np.float32(1 - ADAM_BETA_2)
        v += tmp
        np.sqrt(v, out=tmp)
        tmp += np.float32(ADAM_EPSILON)
        np.divide(m, tmp, out=tmp)
        tmp *= alpha
        self.param -= tmp


def dense_head_from_keras(model, n_classes: int, params: dict | None = None) -> DenseHead:
    """A fitted DenseHead equal to a Keras head model written by embedflow before issue #20 (input ->
    Dropout -> softmax Dense "probabilities"): coef_ = kernel.T, intercept_ = bias (float32), classes_ =
    0..n_classes-1, n_features_in_ = the kernel's rows; `params` (the manifest's hyperparameters) set the
    ones DenseHead takes. Raises ValueError when the model has not exactly one softmax Dense layer of
    n_classes units."""
    return dense_head_from_weights(*keras_dense_weights(model), n_classes, params)


def dense_head_from_weights(coef: np.ndarray, intercept: np.ndarray, n_classes: int,
                            params: dict | None = None) -> DenseHead:
    """A fitted DenseHead with coef_ (n_classes, D) and intercept_ (n_classes,) float32, classes_ =
    0..n_classes-1; `params` (the manifest's hyperparameters) set the ones DenseHead takes. Raises
    ValueError when coef has not n_classes rows."""
    head = DenseHead(**{k: v for k, v in (params or {}).items() if k in DenseHead().get_params()})
    if coef.shape[0] != n_classes:
        raise ValueError(f"the Keras head has {coef.shape[0]} outputs, not {n_classes}")
    head.coef_, head.intercept_ = coef, intercept
    head.classes_, head.n_features_in_ = np.arange(n_classes), int(coef.shape[1])
    return head


def keras_file_dense_weights(data: bytes) -> tuple[np.ndarray, np.ndarray] | None:
    """(coef float32 (classes, D), intercept float32 (classes,)) read from the bytes of a .keras file of
    an old embedflow dense head (input -> [Dropout] -> one softmax Dense with a bias) without importing
    Keras: its config.json names the layers and model.weights.h5 holds the Dense layer's kernel and bias
    under layers/dense/vars/0 and 1 (Keras 3's file layout, keras/src/saving/saving_lib.py). None when
    the file is anything else (other layers, another layout): the caller then loads it with Keras."""
    import io
    import json
    import zipfile

    import h5py

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            config = json.loads(z.read("config.json"))
            weights = z.read("model.weights.h5")
        layers = config["config"]["layers"]
        kinds = [layer["class_name"] for layer in layers]
        if kinds not in (["InputLayer", "Dropout", "Dense"], ["InputLayer", "Dense"]):
            return None
        dense = layers[-1]["config"]
        if dense.get("activation") != "softmax" or not dense.get("use_bias", True):
            return None
        with h5py.File(io.BytesIO(weights), "r") as f:
            kernel = np.asarray(f["layers/dense/vars/0"], np.float32)
            bias = np.asarray(f["layers/dense/vars/1"], np.float32)
    except (KeyError, TypeError, ValueError, OSError, zipfile.BadZipFile):
        return None
    if kernel.ndim != 2 or bias.shape != (kernel.shape[1],) or kernel.shape[1] != dense.get("units"):
        return None
    return np.ascontiguousarray(kernel.T), bias


def keras_dense_weights(model) -> tuple[np.ndarray, np.ndarray]:
    """(coef float32 (classes, D), intercept float32 (classes,)) of the one softmax Dense layer of a Keras
    head model; ValueError when it has not exactly one."""
    import keras

    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    if len(dense) != 1 or getattr(dense[0].activation, "__name__", "") != "softmax":
        raise ValueError("not an embedflow dense head (expected one softmax Dense layer)")
    kernel, bias = dense[0].get_weights()
    return np.ascontiguousarray(np.asarray(kernel, np.float32).T), np.asarray(bias, np.float32)


def keras_to_bytes(model) -> bytes:
    """The .keras file bytes of a Keras model."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m.keras")
        model.save(path)
        with open(path, "rb") as f:
            return f.read()


def keras_from_bytes(data: bytes):
    """A Keras model from .keras file bytes."""
    import keras

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m.keras")
        with open(path, "wb") as f:
            f.write(data)
        return keras.models.load_model(path)
