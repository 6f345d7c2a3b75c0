"""Trained models: the manifest (one reader, one atomic writer, the member check), the train/validation
split and its record, and the Classifier kinds: heads on cached vectors (head_model) and the image
classifiers (image_models: fine-tuned, fused, TFLite), all loaded by load_model (loading)."""

from .classifier import Classifier
from .loading import load_model
from .head_model import HeadClassifier, LoadedModel, load
from .manifest import (FORMAT, MANIFEST, SCHEMA_VERSION, ManifestView, checked_member, output_lock, read_manifest,
                       recorded_caches, recover_aside, sha256_file, staged_folder, write_manifest, write_members, writing)
from .split import SplitCheck, check_split, split_indices, split_record

__all__ = ["Classifier", "FORMAT", "HeadClassifier", "LoadedModel", "MANIFEST", "ManifestView", "SCHEMA_VERSION",
           "SplitCheck", "check_split", "checked_member", "load", "load_model", "output_lock", "read_manifest", "recorded_caches",
           "recover_aside", "sha256_file", "split_indices", "split_record", "staged_folder", "write_manifest", "write_members", "writing"]
