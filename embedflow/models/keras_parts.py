"""Keras image models as embedflow builds them (uint8 pixels -> preprocessing -> base -> head), the
flip test-time-augmentation wrapper, and batched prediction. Shared by finetune, export and explain."""

from __future__ import annotations

import numpy as np

from ..errors import UsageError

TTA_NAME = "flip_tta_mean"


def with_flip_tta(model):
    """uint8 pixels -> mean of `model`'s probabilities for the image and its horizontal mirror. The network
    inside is an uncompiled copy of `model`, so the saved file carries no optimizer state."""
    import keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    model = copy
    inputs = keras.Input(model.input_shape[1:], dtype="uint8", name="pixels")
    mirrored = keras.ops.flip(inputs, axis=2)
    outputs = keras.layers.Average(name=TTA_NAME)([model(inputs), model(mirrored)])
    return keras.Model(inputs, outputs, name=f"{model.name}_flip_tta")


def unwrap_tta(model) -> tuple:
    """(the network inside, True) for a with_flip_tta model; (model, False) for any other."""
    import keras

    inner = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if any(layer.name == TTA_NAME for layer in model.layers) and len(inner) == 1:
        return inner[0], True
    return model, False


def split_parts(model) -> tuple:
    """(rescaling layer, MobileNetV2 base model, head layers after the base) of an embedflow pixel model
    (for a flip-TTA model: of the network inside)."""
    import keras

    model, _ = unwrap_tta(model)
    bases = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if len(bases) != 1:
        raise UsageError("not an embedflow image model (expected one nested backbone)")
    base = bases[0]
    at = model.layers.index(base)
    pre = [layer for layer in model.layers[1:at]]
    return pre, base, model.layers[at + 1:]


def assemble(pre_layers, base, head_layers, size: int, name: str):
    """uint8 pixels -> preprocessing -> base (inference mode) -> head layers, as one flat functional model."""
    import keras

    inputs = keras.Input((size, size, 3), dtype="uint8", name="pixels")
    x = inputs
    for layer in pre_layers:
        x = layer(x)
    x = base(x, training=False)
    for layer in head_layers:
        x = layer(x)
    return keras.Model(inputs, x, name=name)


PREDICT_BATCH = 16  # images per inference call of a Keras image model


def predict_pixels(model, pixels: np.ndarray, batch_size: int = PREDICT_BATCH, dtype=np.float64) -> np.ndarray:
    """Model outputs (N, outputs) of `dtype` for a uint8 array (N, S, S, 3), batch by batch (inference
    mode). dtype float32 for features: float64 doubled stage 1's 20,000 x 1280 features to 205 MB.
    batch_size 16, not 64: a fine-tuned model's flip-averaged validation prediction at 64 raised finetune's
    peak RSS by ~190 MB at 96 px (1,477 -> 1,284 MB at 1,000 images), and at 224 px MobileNetV2 ran 10.4
    img/s at 64 against 21.9 at 16 on this 2-core machine (activations that fit the cache)."""
    out = None
    for i in range(0, len(pixels), batch_size):
        batch = np.asarray(model.predict_on_batch(pixels[i:i + batch_size]))
        if out is None:
            out = np.empty((len(pixels), batch.shape[1]), dtype=dtype)
        out[i:i + len(batch)] = batch
    return out if out is not None else np.zeros((0, model.output_shape[-1]), dtype=dtype)


def load_keras_bytes(data: bytes, name: str, n_classes: int, *, compile: bool = False):
    """A Keras model from the verified bytes of a .keras member (written to a private temporary folder, so
    no other process can swap the file between the check and the load), with Keras' safe_mode on. Raises
    ModelError when the bytes are not a Keras model or its output does not have n_classes columns."""
    import tempfile
    from pathlib import Path

    from ..backbones import quiet_tensorflow
    from ..errors import ModelError

    quiet_tensorflow()
    import keras

    with tempfile.TemporaryDirectory(prefix="embedflow-model-") as tmp:  # mode 0700
        path = Path(tmp) / "model.keras"
        path.write_bytes(data)
        try:
            model = keras.models.load_model(path, compile=compile, safe_mode=True)
        except Exception as e:  # noqa: BLE001 - a damaged or foreign file
            raise ModelError(f"cannot load {name}: {type(e).__name__}: {e}".splitlines()[0]) from None
    if not isinstance(model, keras.Model) or tuple(model.output_shape)[-1:] != (n_classes,):
        raise ModelError(f"{name} is not a model of this folder's {n_classes} classes (output "
                         f"{getattr(model, 'output_shape', type(model).__name__)}): damaged or tampered with")
    return model
