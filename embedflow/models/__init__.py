"""Trained models: the manifest (one reader, one atomic writer, the member check), the train/validation
split and its record, and the Classifier kinds: heads on cached vectors (head_model) and the image
classifiers (image_models: fine-tuned, fused, TFLite), all loaded by load_model (loading)."""

from .classifier import Classifier
from .loading import load, load_image_model, load_model
from .head_model import HeadClassifier, LoadedModel
from .manifest import (FORMAT, MANIFEST, SCHEMA_VERSION, ManifestView, output_lock, read_manifest, read_member, read_regular,
                       recorded_caches, recover_aside, sha256_file, staged_folder, validate_manifest, write_manifest,
                       write_members, writing)
from .trust import signed_here, signing_key
from .split import (SplitCheck, check_split, leak_free_split, recorded_split_indices, split_indices, split_record,
                    without_test_rows)

__all__ = ["Classifier", "FORMAT", "HeadClassifier", "LoadedModel", "MANIFEST", "ManifestView", "SCHEMA_VERSION",
           "SplitCheck", "check_split", "leak_free_split", "load", "load_image_model", "load_model", "output_lock", "read_manifest",
           "read_member", "read_regular", "recorded_caches", "recorded_split_indices", "recover_aside", "sha256_file", "signed_here", "signing_key",
           "split_indices", "split_record", "without_test_rows", "staged_folder", "validate_manifest", "write_manifest", "write_members", "writing"]
