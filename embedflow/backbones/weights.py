"""Where weights files are found (Keras' own cache folder, a --weights file) and their digests."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .spec import BackboneSpec


def _keras_home() -> Path:
    """Where Keras looks for cached downloads (mirrors keras.src.backend.config / file_utils)."""
    if "KERAS_HOME" in os.environ:
        home = Path(os.environ["KERAS_HOME"]).expanduser()
    else:
        base = Path.home() if os.access(Path.home(), os.W_OK) else Path("/tmp")
        home = base / ".keras"
    if not os.access(home, os.W_OK):
        home = Path("/tmp/.keras")
    return home


def _weights_candidates(spec: BackboneSpec) -> list[Path]:
    fname = spec.weights_file
    candidates = [_keras_home() / "models" / fname]
    if "KERAS_HOME" in os.environ:  # a read-only KERAS_HOME that Keras itself would ignore
        candidates.append(Path(os.environ["KERAS_HOME"]).expanduser() / "models" / fname)
    return candidates


def local_weights(spec: BackboneSpec) -> Path | None:
    """The weights file if it is already on this machine (never downloads)."""
    if spec.family == "hub":
        return None
    if spec.weights != "imagenet":
        return Path(spec.weights) if Path(spec.weights).is_file() else None
    return next((p for p in _weights_candidates(spec) if p.is_file()), None)


_HASH_MEMO: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    st = path.stat()
    memo_key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if memo_key not in _HASH_MEMO:
        with open(path, "rb") as f:
            _HASH_MEMO[memo_key] = hashlib.file_digest(f, "sha256").hexdigest()
    return _HASH_MEMO[memo_key]




def embedflow_home() -> Path:
    """Where derived files (converted models) are kept: $EMBEDFLOW_HOME or ~/.cache/embedflow."""
    if "EMBEDFLOW_HOME" in os.environ:
        return Path(os.environ["EMBEDFLOW_HOME"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "embedflow"


def digest_path(path: Path) -> str:
    """sha256 of a weights file; for a folder (a SavedModel), over every file's relative path and sha256."""
    if not path.is_dir():
        return file_sha256(path)
    lines = [f"{p.relative_to(path).as_posix()}:{file_sha256(p)}" for p in sorted(path.rglob("*")) if p.is_file()]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()
