"""Embedding images: the one batch mapper (mapper), its local and Ray engines (mapper, ray_engine), the
incremental cache run (incremental), loose files in memory (files) and decoded pixels for the models
that run on images (decoded)."""

from ..errors import Interrupted
from .decoded import Decoded, decode_folder, decode_refs, refs_for_keys
from .files import embed_files
from .incremental import EmbedSummary, embed_folder, hash_all
from .mapper import BackboneFailure, BatchResult, checked, embed_stream, preferred_batch

__all__ = ["BackboneFailure", "BatchResult", "Decoded", "EmbedSummary", "Interrupted", "checked", "decode_folder",
           "decode_refs", "embed_files", "embed_folder", "embed_stream", "hash_all", "preferred_batch",
           "refs_for_keys"]
