"""Embedding images: the one batch mapper (mapper), its local and Ray engines (mapper, ray_engine), the
incremental cache run (incremental), loose files in memory (files) and decoded pixels for the models
that run on images (decoded), and Embedder, the backbone as a scikit-learn transformer (transformer:
imported on first use, so a warm `embed` does not load scikit-learn)."""

from ..errors import Interrupted
from .decoded import Decoded, decode_folder, decode_refs, refs_for_keys
from .files import embed_files
from .incremental import EmbedSummary, embed_folder, hash_all
from .mapper import BackboneFailure, BatchResult, checked, embed_stream, map_batch, preferred_batch

__all__ = ["BackboneFailure", "BatchResult", "Decoded", "Embedder", "ImageInputError", "EmbedSummary", "Interrupted",
           "checked", "decode_folder", "decode_refs", "embed_files", "embed_folder", "embed_stream", "hash_all",
           "map_batch", "preferred_batch",
           "refs_for_keys"]


def __getattr__(name):
    if name in ("Embedder", "ImageInputError"):
        from . import transformer

        return getattr(transformer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
