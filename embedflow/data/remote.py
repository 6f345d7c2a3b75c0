"""Images on object storage (S3, GCS, Azure, memory://, any fsspec protocol): URLs, listing, the change
detector and reading. Local paths never come here (plain paths keep the os-level code of discover/hashing).

Credentials are never embedflow's: each filesystem finds its own in the usual environment and config
(AWS_* variables, ~/.aws, an instance role for s3fs; GOOGLE_APPLICATION_CREDENTIALS for gcsfs; AZURE_* for
adlfs). A URL that carries them (user:secret@...) is refused, so they can never reach a cache or a log.
"""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass

from ..errors import BadImage, DatasetError, UsageError

_URL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.\-]+)://")  # two letters at least: C:\ is a Windows drive, not a URL
# Package to install for a protocol fsspec knows but cannot import.
_PACKAGES = {"s3": 'pip install "embedflow[s3]" (s3fs)', "s3a": 'pip install "embedflow[s3]" (s3fs)',
             "gs": "pip install gcsfs", "gcs": "pip install gcsfs", "az": "pip install adlfs",
             "abfs": "pip install adlfs", "abfss": "pip install adlfs"}
# The listing field that changes whenever an object's bytes do, in order of preference (docs/scaling.md):
# S3 ETag (an MD5 or a multipart digest), GCS md5Hash/generation, Azure etag, local and memory times.
DETECTOR_FIELDS = ("ETag", "etag", "md5Hash", "generation", "mtime", "LastModified", "last_modified", "created")
REMOTE_INODE = -1  # the 4th column of a remote object's recorded stat: never a real inode

_bytes_read = 0
_counter_lock = threading.Lock()


def is_url(source) -> bool:
    """True for a str URL with a protocol other than file:// ("s3://b/p", "memory://x", "gs://...")."""
    if not isinstance(source, str):
        return False
    m = _URL.match(source)
    return bool(m) and m.group(1).lower() != "file"


def local_path_of(source):
    """file:///abs/path -> /abs/path; anything else unchanged."""
    if isinstance(source, str) and source[:7].lower() == "file://":
        from urllib.parse import unquote, urlparse

        return unquote(urlparse(source).path) or "/"
    return source


def bytes_read() -> int:
    """Bytes of objects read by this process since it started (tests: the Ray driver reads none)."""
    return _bytes_read


def filesystem(url: str):
    """(fsspec filesystem, path without protocol) for url. Raises UsageError (exit 2) naming the package
    when the protocol's is not installed, or when the URL carries credentials."""
    protocol = _URL.match(url).group(1).lower()
    netloc = url[len(protocol) + 3:].split("/", 1)[0]
    if "@" in netloc:
        raise UsageError(f"{protocol}:// URLs with credentials in them are refused: give them to the filesystem "
                         "through its usual environment or config (e.g. AWS_PROFILE or ~/.aws for s3://)")
    try:
        import fsspec
        from fsspec.core import url_to_fs
    except ImportError:
        raise UsageError(f'{protocol}:// inputs need fsspec: pip install fsspec') from None
    try:
        return url_to_fs(url)
    except ImportError:
        from fsspec.registry import known_implementations

        hint = _PACKAGES.get(protocol) or known_implementations.get(protocol, {}).get("err") or "its fsspec package"
        raise UsageError(f"{protocol}:// needs a package that is not installed: {hint}") from None
    except ValueError as e:
        if protocol not in fsspec.available_protocols():
            raise UsageError(f"unknown protocol {protocol}:// (fsspec knows: s3, gs, az, memory, file, ...)") from None
        raise UsageError(f"cannot use {_safe(url)}: {e}") from None


def _safe(url: str) -> str:
    """The URL without any query string (where some filesystems accept tokens)."""
    return url.split("?", 1)[0]


def detector(info: dict) -> tuple[int, int, int, int]:
    """The change detector of a listed object as a 4-int stat (size, two 63-bit digests of the first
    DETECTOR_FIELDS value, REMOTE_INODE); (0, 0, 0, 0), "unknown: always read", when none is listed."""
    for name in DETECTOR_FIELDS:
        value = info.get(name)
        if value not in (None, ""):
            d = hashlib.blake2b(f"{name}={value}".encode(), digest_size=16).digest()
            a, b = (int.from_bytes(d[i:i + 8], "big") >> 1 for i in (0, 8))
            return int(info.get("size") or 0), a, b, REMOTE_INODE
    return 0, 0, 0, 0


@dataclass(frozen=True)
class RemotePath:
    """Where an object is: its full URL, and its change detector from the listing ((0,0,0,0): unknown)."""

    url: str
    stat: tuple = (0, 0, 0, 0)

    def __str__(self) -> str:
        return self.url

    @property
    def name(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1]

    def read(self) -> bytes:
        """All the object's bytes. Raises BadImage with a reason a user understands."""
        global _bytes_read
        fs, path = filesystem(self.url)
        try:
            data = fs.cat_file(path)
        except FileNotFoundError:
            raise BadImage("object vanished while the run was going") from None
        except PermissionError:
            raise BadImage("access denied") from None
        except IsADirectoryError:
            raise BadImage("is a folder, not an image") from None
        except Exception as e:  # noqa: BLE001 (botocore/aiohttp errors are not OSErrors)
            raise BadImage(f"cannot read: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
        with _counter_lock:
            _bytes_read += len(data)
        return data


def join(url: str, key: str) -> str:
    return url.rstrip("/") + "/" + key


def list_objects(url: str) -> tuple[str, list[tuple[str, RemotePath]]]:
    """(normalised root URL without the trailing "/", [(path relative to it, RemotePath)]) of every object
    below the URL, sorted. Raises DatasetError (exit 2) when it cannot be listed (no such bucket, no
    credentials, access denied) or holds nothing: one line, never the credentials."""
    fs, path = filesystem(url)
    path = path.rstrip("/")
    root = _safe(url).rstrip("/")
    fs.invalidate_cache()  # listings cached by an earlier run in this process (any folder below) may be stale
    try:
        found = fs.find(path, detail=True, withdirs=False)
    except FileNotFoundError:
        raise DatasetError(f"not found: {root} (no such bucket or prefix)") from None
    except PermissionError as e:
        raise DatasetError(f"access denied to {root}: {_first_line(e)} (credentials come from the filesystem's "
                           "usual environment/config)") from None
    except Exception as e:  # noqa: BLE001 (botocore's NoCredentialsError, connection errors, ...)
        raise DatasetError(f"cannot list {root}: {type(e).__name__}: {_first_line(e)}") from None
    out = []
    prefix = path + "/"
    for name, info in found.items():
        name = name.rstrip("/") if info.get("type") == "directory" else name
        if info.get("type") == "directory" or not name.startswith(prefix):
            continue  # folder markers, and the object that is the prefix itself
        rel = name[len(prefix):]
        out.append((rel, RemotePath(join(root, rel), detector(info))))
    if not out and not fs.exists(path):
        raise DatasetError(f"not found: {root} (no such bucket or prefix)")
    out.sort(key=lambda item: item[0])
    return root, out


def object_or_prefix(url: str, wanted) -> list[RemotePath]:
    """[the object] when url names one, else the objects below it whose name passes wanted(name), sorted
    (hidden ones, under a folder starting with ".", left out). Raises UsageError when there is neither."""
    fs, path = filesystem(url)
    fs.invalidate_cache()
    try:
        info = fs.info(path)
    except FileNotFoundError:
        raise UsageError(f"no such object or prefix: {_safe(url)}") from None
    except Exception as e:  # noqa: BLE001
        raise UsageError(f"cannot read {_safe(url)}: {type(e).__name__}: {_first_line(e)}") from None
    if info.get("type") != "directory":
        return [RemotePath(_safe(url), detector(info))]
    _, objects = list_objects(url)
    return [rp for rel, rp in objects if wanted(rel.rsplit("/", 1)[-1]) and not any(
        part.startswith(".") for part in rel.split("/")[:-1])]


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def source_id(root) -> str:
    """What a cache records as its source: the URL (no trailing "/", no query) or the absolute local path."""
    import os

    if is_url(root):
        return _safe(root).rstrip("/")
    return os.path.abspath(local_path_of(root))


def source_path(text: str):
    """A path string as a Ray worker receives it: a RemotePath for a URL, a pathlib.Path otherwise."""
    from pathlib import Path

    return RemotePath(text) if is_url(text) else Path(text)
