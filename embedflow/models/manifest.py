"""Model folders' manifest.json: the one reader, the one atomic writer, the member check (sha256 before
anything is loaded), and the fields every loaded model exposes. A joblib or Keras file can run code when
loaded: only load model folders from sources you trust.

Writing (`staged_folder`): under the folder's writer lock (`.NAME.lock` beside it, see output_lock), the
complete folder is built beside its target (`.NAME.tmp-PID`, same parent; NAME shortened with a hash near
the filesystem's 255-byte limit),
its files and the folder are fsynced, then it is swapped into place, so that at every instant the target
is the complete old folder or the complete new one. On Linux the swap is one `renameat2(RENAME_EXCHANGE)`;
elsewhere the old folder is renamed aside (`.NAME.old-PID`), the new one renamed in, the old one deleted,
and `read_manifest` puts a folder left aside by a crash between those two renames back in place.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from ..errors import ModelError, OutputError, OutputLocked
from ..fsio import WriterLock, check_writable_folder, disk_error, staging_stem

FORMAT = "embedflow.model"
SCHEMA_VERSION = 1
MANIFEST = "manifest.json"


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def write_members(out_dir: Path, manifest: dict, members: dict[str, str]) -> None:
    """Write text members (e.g. labels.txt, README.md) into out_dir, each beside its target and renamed into
    place, and record their sha256 in manifest["files"]."""
    files = manifest.setdefault("files", {})
    for name, text in members.items():
        path = Path(out_dir) / name
        tmp = path.with_name(f".{name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
        files[name] = sha256_file(path)


class ManifestView:
    """What every loaded model says about itself through its manifest."""

    manifest: dict

    @property
    def classes(self) -> list[str]:
        return self.manifest["classes"]

    @property
    def fingerprint(self) -> dict:
        return self.manifest["fingerprint"]


def _jsonable(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def read_manifest(model_dir: str | Path) -> dict:
    """The manifest of a model folder, checked for format and schema. Raises ModelError (missing folder,
    no manifest, unreadable, foreign, newer schema). A folder a crashed writer left aside is put back first."""
    model_dir = Path(model_dir)
    path = model_dir / MANIFEST
    if not model_dir.exists():
        recover_aside(model_dir)
    if not model_dir.exists():
        raise ModelError(f"no model folder at {model_dir}: train one with `embedflow fit`")
    if not path.is_file():
        raise ModelError(f"{model_dir} is not an embedflow model folder (no {MANIFEST})")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot read {path}: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ModelError(f"{path} is not an embedflow model manifest")
    try:
        schema = int(manifest.get("schema_version", 0))
    except (TypeError, ValueError):
        raise ModelError(f"{path} has an invalid schema_version: damaged or tampered with") from None
    if schema > SCHEMA_VERSION:
        raise ModelError(f"{model_dir} was written by a newer embedflow; upgrade to load it")
    return manifest


def checked_member(model_dir: Path, manifest: dict, name) -> Path:
    """model_dir/name, after checking that the manifest names a plain file of the folder and that its
    sha256 is the one the manifest records. Call before loading anything that can run code."""
    where = model_dir / MANIFEST
    if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
        raise ModelError(f"{where} names {name!r} as its model file, which is not a file of the folder: "
                         "damaged or tampered with; refusing to load it")
    path = model_dir / name
    if not path.is_file():
        raise ModelError(f"{model_dir} is incomplete: {name} is missing")
    files = manifest.get("files")
    recorded = files.get(name) if isinstance(files, dict) else None
    if not recorded:
        raise ModelError(f"{where} records no sha256 for {name}: damaged or tampered with; refusing to load it")
    if sha256_file(path) != recorded:
        raise ModelError(
            f"{path} does not match the sha256 in its manifest: it was modified or replaced; refusing to "
            "load it (model files can run code: only use ones from sources you trust)"
        )
    return path


def _require(manifest: dict, model_dir: Path, fields: dict) -> None:
    """Fields a loader needs, with their types: a missing or mistyped one is one clear error."""
    for name, kind in fields.items():
        if not isinstance(manifest.get(name), kind):
            raise ModelError(f"{model_dir / MANIFEST} has no valid '{name}': damaged or tampered with")
    if "id" not in manifest.get("fingerprint", {"id": ""}):
        raise ModelError(f"{model_dir / MANIFEST} has no fingerprint id: damaged or tampered with")


def recorded_caches(manifest: dict) -> list[Path]:
    """Where the cache a head was fitted on should be: its path as given (relative to where `fit` ran),
    then its absolute path (older manifests lack it)."""
    recorded = manifest.get("cache") or {}
    return [Path(p) for p in dict.fromkeys(filter(None, (recorded.get("path"), recorded.get("abspath"))))]


# --- the one writer ----------------------------------------------------------------------------------


def write_manifest(folder: Path, manifest: dict) -> Path:
    """manifest.json in a staged folder, with `format`, `schema_version` and `created_utc` filled in."""
    manifest = {"format": FORMAT, "schema_version": SCHEMA_VERSION, **manifest}
    manifest.setdefault("created_utc", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    path = Path(folder) / MANIFEST
    path.write_text(json.dumps(manifest, indent=2, default=_jsonable))
    return path


def output_lock(target: str | Path, reporter=None) -> WriterLock:
    """The writer lock of a model folder: `.NAME.lock` beside it (re-entrant within a process, so a save
    inside a locked fit nests). Raises OutputLocked (exit 5) when another process writes the folder."""
    target = Path(target)
    return WriterLock(target.parent / f".{staging_stem(target.name)}.lock", f"model folder {target}", OutputLocked,
                      OutputError, reporter, reentrant=True, hint="wait for it to finish or choose another --out")


@contextlib.contextmanager
def writing(target: str | Path, reporter=None, *, inside: bool = False):
    """Hold the output lock of `target` and check, before any work, that its folder can be written (and,
    with `inside`, the target folder itself: evaluate writes its report there). Raises OutputLocked, or
    OutputError naming the read-only (or full) folder."""
    target = Path(target)
    with output_lock(target, reporter):
        for folder in ([target] if inside else []) + [target.parent]:
            err = check_writable_folder(folder)
            if err is not None:
                raise OutputError(f"cannot write {target}: {folder} is not writable ({err.strerror or err}); "
                                  "nothing was done") from None
        yield target


@contextlib.contextmanager
def staged_folder(target: str | Path, reporter=None):
    """Yields an empty folder beside `target` to write the complete model folder into; when the block ends
    without an exception, fsyncs it and swaps it into place (see the module docstring). On an exception
    the staged folder is removed and the target is left as it was; a full or failing disk (or a read-only
    folder) is OutputError (exit 5). The target's output lock is held throughout (OutputLocked)."""
    target = Path(target)
    with output_lock(target, reporter):
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            stem = staging_stem(target.name)
            for stale in target.parent.glob(f".{_glob_escape(stem)}.tmp-*"):  # a killed writer's (we hold the lock)
                shutil.rmtree(stale, ignore_errors=True)
            staged = target.parent / f".{stem}.tmp-{os.getpid()}"
            staged.mkdir()
        except OSError as e:
            raise OutputError(f"cannot write {target}: {e.strerror or e}") from None
        try:
            yield staged
            _fsync_tree(staged)
            swap_into_place(staged, target)
        except OSError as e:
            if not disk_error(e):
                raise
            raise OutputError(f"cannot write {target}: {e.strerror or e}"
                              f"{f' ({e.filename})' if e.filename else ''}; it was left as it was") from None
        finally:
            shutil.rmtree(staged, ignore_errors=True)


def swap_into_place(staged: Path, target: Path) -> None:
    """Make `staged` the folder at `target`; afterwards `staged` holds the old folder (or nothing)."""
    if not os.path.lexists(target):
        _rename(staged, target)
    elif not _exchange(staged, target):
        aside = target.parent / f".{staging_stem(target.name)}.old-{os.getpid()}"
        shutil.rmtree(aside, ignore_errors=True)
        _rename(target, aside)
        _rename(staged, target)  # a crash before this line leaves the old folder aside: recover_aside
        shutil.rmtree(aside, ignore_errors=True)
    _fsync_dir(target.parent)


def recover_aside(target: Path) -> bool:
    """Put back a complete folder that a writer renamed aside before crashing; True if one was."""
    target = Path(target)
    if not target.parent.is_dir():
        return False
    aside = sorted((p for p in target.parent.glob(f".{_glob_escape(staging_stem(target.name))}.old-*") if (p / MANIFEST).is_file()),
                   key=lambda p: p.stat().st_mtime, reverse=True)
    for p in aside:
        try:
            _rename(p, target)
            return True
        except OSError:  # another reader put it back first
            return target.exists()
    return False


def _glob_escape(name: str) -> str:
    import glob

    return glob.escape(name)


_rename = os.rename  # one seam, so the tests can crash a writer between its two renames


def _exchange(a: Path, b: Path) -> bool:
    """Atomically exchange two paths with renameat2(RENAME_EXCHANGE) (Linux, glibc >= 2.28); False where
    that is unavailable (other systems, old libc, file systems without it)."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes
    import errno

    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(str(a)), at_fdcwd, os.fsencode(str(b)), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _fsync_tree(folder: Path) -> None:
    for path in sorted(folder.rglob("*"), reverse=True):
        if path.is_file() and not path.is_symlink():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        elif path.is_dir():
            _fsync_dir(path)
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot fsync a directory
        pass
    finally:
        os.close(fd)
