"""embedflow: transfer learning on image folders. Embed once into an HDF5 cache, train heads in seconds."""

from .__about__ import __version__

__all__ = ["__version__", "embed_folder", "fit_head", "evaluate", "predict", "info", "neighbors", "duplicates",
           "list_backbones", "Embedder", "EmbedflowError"]


def __getattr__(name):  # lazy: `import embedflow` (and `embedflow --help`) stays instant
    if name in ("embed_folder", "fit_head", "evaluate", "predict", "info", "neighbors", "duplicates",
                "list_backbones"):
        from . import api

        return getattr(api, name)
    if name == "Embedder":
        from .embedding.transformer import Embedder

        return Embedder
    if name == "EmbedflowError":
        from .errors import EmbedflowError

        return EmbedflowError
    raise AttributeError(f"module 'embedflow' has no attribute {name!r}")
