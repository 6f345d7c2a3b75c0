"""Cache keys back to files: a key is a path relative to the dataset root, and must stay inside it."""

from __future__ import annotations

import functools
import os
import unicodedata
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
    path = Path(root) / key
    return path if os.path.lexists(path) else _as_named_on_disk(Path(root), key)


def name_key(name: str) -> str:
    """The key spelling of a file or folder name, as discovery makes keys: NFC, and a name that is not valid
    UTF-8 with its bytes escaped (b"caf\xe9" -> "caf\\xe9")."""
    return unicodedata.normalize("NFC", os.fsencode(name).decode("utf-8", "backslashreplace"))


def _as_named_on_disk(root: Path, key: str) -> Path:
    """root/key spelled as the files are named: a key is NFC (and escapes names that are not UTF-8), while a
    name on disk may be NFD (macOS writes names so) or raw bytes. Each missing part of the path is looked up
    among its folder's entries by its key spelling; a part that matches none stays as in the key."""
    path = root
    for part in key.split("/"):
        there = path / part
        if not os.path.lexists(there):
            named = _entries_by_key(str(path)).get(part)
            there = path / named if named is not None else there
        path = there
    return path


@functools.lru_cache(maxsize=256)
def _entries_by_key(folder: str) -> dict[str, str]:
    """{key spelling: name on disk} of a folder's entries (listed once per process; {} when unreadable)."""
    try:
        return {name_key(name): name for name in os.listdir(folder)}
    except OSError:
        return {}
