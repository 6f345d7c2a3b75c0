"""Backbones: the spec and registry (spec, registry), weights files (weights), fingerprints
(fingerprint), TF Hub SavedModels (hub) and the inference runtimes (runtimes).

Nothing here imports TensorFlow until a model is really built, so a warm `embed` (nothing new to
embed) never pays for it.
"""

from .fingerprint import (ID_SCHEME, check_compatible, describe, differences, fingerprint, fingerprint_id, same_backbone,
                          spec_from_fingerprint, upgrade, weights_digest)
from .hub import HubEmbedder, hub_spec, resolve_hub
from .registry import get_spec, listing, parse_backbone, resolve_weights
from .runtimes import (CONVERTER_VERSION, KerasEmbedder, check_runtime, LiteRTEmbedder, build_keras_backbone, convert_to_tflite,
                       has_gpu, make_embedder, make_interpreter, min_cosine, preprocessing_layers, run_tflite,
                       space_guarded, tflite_backbone_path)
from .silence import quiet_tensorflow, stderr_fd_silenced
from .spec import (DEFAULT_BACKBONE, DEFAULT_PRECISION, EMBEDDING_VERSION, PRECISIONS, HUB_PREFIX, HUB_PREPROCESSING, MAX_IMAGE_SIZE, MIN_IMAGE_SIZE,
                   MOBILENET_V2_ALPHAS, MOBILENET_V2_SIZES, REGISTRY, BackboneSpec, NotFineTunable,
                   require_fine_tunable)
from .weights import digest_path, embedflow_home, file_sha256, local_weights

__all__ = ["BackboneSpec", "check_runtime", "CONVERTER_VERSION", "DEFAULT_BACKBONE", "DEFAULT_PRECISION", "PRECISIONS", "EMBEDDING_VERSION", "HUB_PREFIX",
           "HUB_PREPROCESSING", "HubEmbedder", "ID_SCHEME", "KerasEmbedder", "LiteRTEmbedder", "MAX_IMAGE_SIZE", "MIN_IMAGE_SIZE",
           "MOBILENET_V2_ALPHAS", "MOBILENET_V2_SIZES", "NotFineTunable", "REGISTRY", "build_keras_backbone",
           "check_compatible", "convert_to_tflite", "describe", "differences", "digest_path", "embedflow_home", "file_sha256",
           "fingerprint", "fingerprint_id", "get_spec", "has_gpu", "hub_spec", "listing", "local_weights",
           "make_embedder", "make_interpreter", "min_cosine", "parse_backbone", "preprocessing_layers",
           "quiet_tensorflow", "require_fine_tunable", "resolve_hub", "resolve_weights", "run_tflite", "same_backbone",
           "space_guarded", "spec_from_fingerprint", "stderr_fd_silenced", "tflite_backbone_path", "upgrade", "weights_digest"]
