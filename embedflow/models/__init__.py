"""Trained models: the manifest (one reader, the member check), the train/validation split, heads on
cached vectors (head_model) and the image classifiers (image_models: fine-tuned, fused, TFLite)."""

from .head_model import LoadedModel, load, save
from .manifest import FORMAT, MANIFEST, SCHEMA_VERSION, ManifestView, checked_member, read_manifest, recorded_caches, sha256_file, write_members
from .split import split_indices

__all__ = ["FORMAT", "LoadedModel", "MANIFEST", "ManifestView", "SCHEMA_VERSION", "checked_member", "load",
           "read_manifest", "recorded_caches", "save", "sha256_file", "split_indices", "write_members"]
