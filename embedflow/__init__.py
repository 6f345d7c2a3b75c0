"""embedflow: transfer learning on image folders. Embed once into an HDF5 cache, train heads in seconds.

    from embedflow import open_cache, fit_head, load_model
    clf = fit_head(open_cache("cache/embeddings.h5"), head="svm", C=10.0)   # in memory
    clf.predict_proba([PIL.Image.open("photo.jpg")])                      # (1, n_classes) float32
    clf.save("models/svm"); load_model("models/svm").predict(["photo.jpg"])
"""

import sys as _sys
import types as _types

from .__about__ import __version__

_API = ("embed_folder", "open_cache", "fit_head", "load_model", "evaluate", "predict", "report", "finetune", "export", "audit",
        "explain", "info", "neighbors", "duplicates", "list_backbones")
_TYPES = {"Classifier": "models", "Cache": "cache", "Embedder": "embedding", "EmbedflowError": "errors"}

__all__ = ["__version__", *_API, *_TYPES]


def __getattr__(name):  # lazy: `import embedflow` (and `embedflow --help`) stays instant
    import importlib

    if name in _API:
        return getattr(importlib.import_module(".api", __name__), name)
    if name in _TYPES:
        return getattr(importlib.import_module(f".{_TYPES[name]}", __name__), name)
    raise AttributeError(f"module 'embedflow' has no attribute {name!r}")


class _Package(_types.ModuleType):
    """Importing a submodule named like an API function (embedflow.finetune, .evaluate, .predict, .export,
    .explain) must not rebind the package attribute: `from embedflow import finetune` is the function.
    The modules stay importable by their dotted names (from embedflow.finetune import DEFAULTS)."""

    def __setattr__(self, name, value):
        if name in _API and isinstance(value, _types.ModuleType):
            return
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package
