"""What a backbone is: its spec (input size, preprocessing, output dimension, where its weights come
from) and the registry of built-in ones. Pure data: nothing here loads a model."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from ..errors import UsageError

# Bump when the way vectors are computed changes (decode, resize, preprocessing): old caches then
# no longer match and are refused instead of being mixed with new vectors.
EMBEDDING_VERSION = 1
KERAS_ORIGIN = "https://storage.googleapis.com/tensorflow/keras-applications/"
KERAS_WEIGHTS_ORIGIN = KERAS_ORIGIN + "mobilenet_v2/"
DEFAULT_BACKBONE = "mobilenet_v2"
HUB_PREFIX = "hub:"
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 96, 224
HUB_MIN_IMAGE_SIZE, HUB_MAX_IMAGE_SIZE = 32, 512
PRECISIONS = ("fp32", "int8")
DEFAULT_PRECISION = "fp32"


class NotFineTunable(UsageError):
    """The backbone is not a Keras model (a TF Hub SavedModel): it can embed, not be trained or fused."""


@dataclass(frozen=True)
class BackboneSpec:
    name: str  # registry name, e.g. "mobilenet_v2", or "hub"
    alpha: float | None  # width multiplier (MobileNets), None where it does not apply
    image_size: int  # square input side in pixels
    output_dim: int  # length of the pooled feature vector
    preprocessing: str  # how uint8 pixels become model inputs (recorded in the fingerprint)
    weights: str = "imagenet"  # "imagenet" (Keras' own download/cache mechanism) or a file path; hub: the handle
    family: str = "keras"  # "keras" (keras.applications) or "hub" (TF Hub / SavedModel feature vector)
    keras_app: str = "MobileNetV2"  # keras.applications constructor
    pixels: str = "mobilenet_v2"  # preprocessing recipe: mobilenet_v2 ([-1, 1]), raw (0..255), caffe, unit ([0, 1])
    weights_file: str = ""  # file name Keras downloads the ImageNet (no-top) weights as
    weights_origin: str = ""  # URL folder Keras downloads that file from
    weights_size: int = 224  # resolution the ImageNet weights were trained at (MobileNetV2 has several)
    fixed_size: bool = False  # hub: the SavedModel's signature only takes image_size x image_size images
    precision: str = "fp32"  # "fp32", or "int8": a full-integer LiteRT backbone (its own fingerprint)

    @property
    def keras_weights_file(self) -> str:
        return self.weights_file

    @property
    def fine_tunable(self) -> bool:
        """Whether finetune/export can train or fuse it (a Keras model); hub backbones cannot."""
        return self.family == "keras"

    @property
    def arg(self) -> str:
        """The --backbone value that selects this backbone (without --image-size/--weights)."""
        if self.family == "hub":
            return HUB_PREFIX + self.weights
        if self.name == "mobilenet_v2" and (self.alpha, self.weights_size) != (1.0, 224):
            return f"mobilenet_v2:{self.alpha}:{self.weights_size}"
        return self.name

    @property
    def slug(self) -> str:
        """A file-name-safe name, for caches of several backbones side by side."""
        if self.family == "hub":
            parts = [p for p in re.split(r"[/\\]+", self.weights.split("://", 1)[-1]) if p][-2:]
            readable = re.sub(r"[^A-Za-z0-9_.]+", "_", "-".join(parts)).strip("_.-")[:40]
            return f"hub-{readable}-{hashlib.sha256(self.weights.encode()).hexdigest()[:6]}"
        return self.arg.replace(":", "-") + ("-int8" if self.precision == "int8" else "")


def _mobilenet_v2(alpha: float = 1.0, size: int = 224) -> BackboneSpec:
    return BackboneSpec(
        name="mobilenet_v2", alpha=float(alpha), image_size=size,
        output_dim=1280 if alpha <= 1.0 else int(1280 * alpha),
        preprocessing="mobilenet_v2: x/127.5 - 1 (pixels to [-1, 1])",
        weights_file=f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{size}_no_top.h5",
        weights_origin=KERAS_WEIGHTS_ORIGIN, weights_size=size,
    )


def _keras_app(name: str, app: str, dim: int, pixels: str, preprocessing: str, file: str, origin: str,
               alpha: float | None = None) -> BackboneSpec:
    return BackboneSpec(name=name, alpha=alpha, image_size=224, output_dim=dim, preprocessing=preprocessing,
                        keras_app=app, pixels=pixels, weights_file=file, weights_origin=origin)


_BUILT_IN = "built into the Keras model: raw pixels 0..255"


REGISTRY: dict[str, BackboneSpec] = {
    "mobilenet_v2": _mobilenet_v2(),
    "mobilenet_v3_small": _keras_app("mobilenet_v3_small", "MobileNetV3Small", 576, "raw",
                                     f"{_BUILT_IN} (Rescaling to [-1, 1] inside)",
                                     "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
                                     KERAS_ORIGIN + "mobilenet_v3/", alpha=1.0),
    "mobilenet_v3_large": _keras_app("mobilenet_v3_large", "MobileNetV3Large", 960, "raw",
                                     f"{_BUILT_IN} (Rescaling to [-1, 1] inside)",
                                     "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5",
                                     KERAS_ORIGIN + "mobilenet_v3/", alpha=1.0),
    "efficientnet_b0": _keras_app("efficientnet_b0", "EfficientNetB0", 1280, "raw",
                                  f"{_BUILT_IN} (Rescaling + ImageNet Normalization inside)",
                                  "efficientnetb0_notop.h5", "https://storage.googleapis.com/keras-applications/"),
    "resnet50": _keras_app("resnet50", "ResNet50", 2048, "caffe",
                           "caffe: RGB to BGR minus the ImageNet mean (103.939, 116.779, 123.68), no scaling",
                           "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5", KERAS_ORIGIN + "resnet/"),
}


MOBILENET_V2_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)


MOBILENET_V2_SIZES = (96, 128, 160, 192, 224)


HUB_PREPROCESSING = "TF Hub image convention: x/255 (pixels to [0, 1])"


def require_fine_tunable(spec: BackboneSpec, what: str = "fine-tuned") -> None:
    """Raise NotFineTunable unless the backbone is a Keras model that can be trained or fused."""
    if not spec.fine_tunable:
        raise NotFineTunable(
            f"the {spec.family} backbone {spec.arg} runs as a TensorFlow SavedModel, not a Keras model, so it "
            f"cannot be {what}; use a Keras application backbone instead "
            f"(--backbone {', '.join(sorted(REGISTRY))})"
        )
