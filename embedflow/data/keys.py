"""Cache keys back to files: a key is a path relative to the dataset root, and must stay inside it."""

from __future__ import annotations

from pathlib import Path, PurePosixPath, PureWindowsPath

from ..errors import BadImage
from .remote import RemotePath, is_url, join


def key_problem(key) -> str | None:
    """Why `key` cannot name a file inside the dataset folder (None when it can): not a string, empty, an
    absolute path or a drive, a `..` component, a NUL byte. Lexical on purpose: a class folder may be a link
    to elsewhere, which discovery followed when it made the key."""
    if not isinstance(key, str) or not key:
        return "not a file name"
    if "\x00" in key:
        return "it holds a NUL byte"
    posix, windows = PurePosixPath(key), PureWindowsPath(key)
    if posix.is_absolute() or windows.is_absolute() or windows.drive or key.startswith(("/", "\\")):
        return "it is an absolute path"
    if ".." in posix.parts or ".." in windows.parts:
        return "it leaves the dataset folder (..)"
    return None


def key_path(root: str | Path, key) -> Path | RemotePath:
    """root/key for a cache key (a RemotePath when root is an object-store URL such as s3://bucket/prefix);
    raises BadImage with the reason when the key would leave the root."""
    problem = key_problem(key)
    if problem:
        raise BadImage(f"refused key {key!r}: {problem}; a cache key must be a path inside its dataset folder")
    if is_url(root):
        return RemotePath(join(root, key))
    return Path(root) / key
