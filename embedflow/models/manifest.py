"""Model folders' manifest.json: the one reader, the one atomic (and signing, see models.trust) writer, the
validation of every field, and the member read (one read: the sha256 is checked on the bytes that are then
loaded; links and non-regular files are refused). A joblib or Keras file can run code when loaded:
load_model refuses a folder this user's key did not sign unless trust=True.

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
import math
import os
import shutil
import stat
import sys
import time
from pathlib import Path

import numpy as np

from ..errors import ModelError, OutputError, OutputLocked, UsageError
from ..fsio import WriterLock, check_writable_folder, disk_error, scratch_folder, staging_stem
from . import trust

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


def read_regular(path: Path, what: str = "file") -> bytes:
    """The bytes of `path`, read once, refusing anything but a regular file: a symbolic link (not followed),
    a FIFO (opened without blocking), a device or a folder is a ModelError."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise ModelError(f"{path.parent} is incomplete: {path.name} is missing") from None
    except OSError as e:
        raise ModelError(f"cannot read {path}: {e.strerror or e}") from None
    if stat.S_ISLNK(st.st_mode):
        raise ModelError(f"{path} is a symbolic link: a model folder must hold its {what} itself; refusing to "
                         "follow it")
    if not stat.S_ISREG(st.st_mode):
        raise ModelError(f"{path} is not a regular file: refusing to read it as a model {what}")
    try:
        fd = os.open(path, flags)
    except OSError as e:  # ELOOP: replaced by a link after the lstat
        raise ModelError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ModelError(f"{path} is not a regular file: refusing to read it as a model {what}")
        with os.fdopen(os.dup(fd), "rb") as f:
            return f.read()
    except OSError as e:
        raise ModelError(f"cannot read {path}: {e.strerror or e}") from None
    finally:
        os.close(fd)


def read_manifest(model_dir: str | Path) -> dict:
    """The manifest of a model folder, checked for format and schema. Raises ModelError (missing folder,
    no manifest, a manifest that is a link or not a regular file, unreadable, foreign, newer schema). A
    folder a crashed writer left aside is put back first. Fields are checked by validate_manifest."""
    model_dir = Path(model_dir)
    path = model_dir / MANIFEST
    if not model_dir.exists():
        recover_aside(model_dir)
    if not model_dir.exists():
        raise ModelError(f"no model folder at {model_dir}: train one with `embedflow fit`")
    if not os.path.lexists(path):
        raise ModelError(f"{model_dir} is not an embedflow model folder (no {MANIFEST})")
    data = read_regular(path, "manifest")
    try:
        manifest = json.loads(data)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ModelError(f"cannot read {path}: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ModelError(f"{path} is not an embedflow model manifest")
    schema = manifest.get("schema_version", 0)
    if type(schema) is not int or schema < 0:
        raise ModelError(f"{path} has an invalid schema_version: damaged or tampered with")
    if schema > SCHEMA_VERSION:
        raise ModelError(f"{model_dir} was written by a newer embedflow; upgrade to load it")
    return manifest


# --- validation: every field a loader or a report reads ----------------------------------------------

KINDS = ("cached-head", "finetuned", "fused", "tflite")
HEADS = ("logreg", "svm", "dense", "knn")
MODEL_SUFFIXES = {"cached-head": (".joblib", ".keras"), "finetuned": (".keras",), "fused": (".keras",),
                  "tflite": (".tflite",)}
MAX_IMAGE_SIZE = 4096


def _is_member_name(name) -> bool:
    return isinstance(name, str) and bool(name) and Path(name).name == name and name not in (".", "..") \
        and "\\" not in name and "\x00" not in name


def _is_sha256(value) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def _is_size(value) -> bool:
    return type(value) is int and 1 <= value <= MAX_IMAGE_SIZE


# The unknown-input rule a fitted head may carry ("rejector" in the manifest, arrays in rejector.npz):
# method -> the arrays it needs (insight.Rejector reads them; load_model checks them at load).
REJECTOR_ARRAYS = {"knn_cosine": ("reference",), "mahalanobis": ("means", "precision"),
                   "relative_mahalanobis": ("means", "precision", "background_mean", "background_precision")}
_FP_STRINGS = ("backbone", "pixels", "preprocessing", "pooling_code", "pooling", "resize_code", "resize",
               "weights_sha256", "weights_source", "backbone_arg", "embedflow_version")
_FP_COUNTS = ("embedding_version", "id_scheme")
MAX_DIM = 1_000_000


def _is_number(value) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def validate_manifest(manifest: dict, model_dir: str | Path) -> dict:
    """Check every field a loader uses: types, ranges, known kinds, member names and their recorded
    sha256. Returns the manifest; raises ModelError (exit 5) naming the first bad field."""
    where = Path(model_dir) / MANIFEST

    def bad(field: str, why: str):
        raise ModelError(f"{where} has no valid '{field}' ({why}): damaged or tampered with")

    kind = manifest.get("kind", "cached-head")
    if kind not in KINDS:
        if isinstance(kind, str):
            raise ModelError(f"{model_dir} holds a model of unknown kind '{kind}': written by a newer embedflow?")
        bad("kind", f"one of {', '.join(KINDS)}")
    classes = manifest.get("classes")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) and c for c in classes):
        bad("classes", "a non-empty list of class names")
    if len(set(classes)) != len(classes):
        bad("classes", "a class is named twice")
    fp = manifest.get("fingerprint")
    if not isinstance(fp, dict):
        bad("fingerprint", "a table")
    if not isinstance(fp.get("id"), str) or not fp["id"]:
        bad("fingerprint.id", "a non-empty string")
    if "image_size" in fp and not _is_size(fp["image_size"]):
        bad("fingerprint.image_size", f"an integer in 1..{MAX_IMAGE_SIZE}")
    if fp.get("output_dim") is not None and not (type(fp["output_dim"]) is int and 1 <= fp["output_dim"] <= MAX_DIM):
        bad("fingerprint.output_dim", f"an integer in 1..{MAX_DIM}")
    if fp.get("alpha") is not None and not (_is_number(fp["alpha"]) and fp["alpha"] > 0):
        bad("fingerprint.alpha", "a number > 0")
    for field in _FP_STRINGS:
        if fp.get(field) is not None and not isinstance(fp[field], str):
            bad(f"fingerprint.{field}", "a string")
    for field in _FP_COUNTS:
        if fp.get(field) is not None and not (type(fp[field]) is int and fp[field] >= 0):
            bad(f"fingerprint.{field}", "an integer >= 0")
    if "image_size" in manifest and not _is_size(manifest["image_size"]):
        bad("image_size", f"an integer in 1..{MAX_IMAGE_SIZE}")
    if not _is_size(manifest.get("image_size", fp.get("image_size"))):
        bad("fingerprint.image_size", "the input size in pixels")
    files = manifest.get("files")
    if not isinstance(files, dict):
        bad("files", "a table of member names and their sha256")
    for name, digest in files.items():
        if not _is_member_name(name):
            bad("files", f"{name!r} is not a file of the folder")
        if not _is_sha256(digest):
            bad(f"files.{name}", "a sha256 in hex")
    model_field = "head_file" if kind == "cached-head" else "model_file"
    name = manifest.get(model_field)
    if not isinstance(name, str):
        bad(model_field, "the name of the model file")
    if not _is_member_name(name):
        raise ModelError(f"{where} names {name!r} as its model file, which is not a file of the folder: "
                         "damaged or tampered with; refusing to load it")
    if not name.endswith(MODEL_SUFFIXES[kind]):
        bad(model_field, f"a {' or '.join(MODEL_SUFFIXES[kind])} file for a {kind} model")
    if name not in files:
        raise ModelError(f"{where} records no sha256 for {name}: damaged or tampered with; refusing to load it")
    if kind == "cached-head":
        if manifest.get("head", "logreg" if name.endswith(".joblib") else "dense") not in HEADS:
            bad("head", f"one of {', '.join(HEADS)}")
        # every head is head.joblib; a dense head saved before issue #20 is head.keras (still loaded)
        if name.endswith(".keras") and manifest.get("head", "dense") != "dense":
            bad("head_file", "head.joblib (or, saved before issue #20, head.keras for a dense head)")
    keras_file = manifest.get("keras_file")
    if keras_file is not None and (not _is_member_name(keras_file) or not keras_file.endswith(".keras")
                                   or keras_file not in files):
        bad("keras_file", "a .keras file of the folder listed in 'files'")
    for field in ("hyperparameters", "data", "split", "metrics", "cache", "source", "parity"):
        if manifest.get(field) is not None and not isinstance(manifest[field], dict):
            bad(field, "a table")
    split = manifest.get("split") or {}
    for field in ("val_keys", "val_hashes"):
        value = split.get(field)
        if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            bad(f"split.{field}", "a list of strings")
    for field, kinds in (("val_split", (int, float)), ("seed", (int,))):
        value = split.get(field)
        if value is not None and (type(value) not in kinds or not (0 <= value < (1 if field == "val_split" else 2**63))):
            bad(f"split.{field}", "0 <= val_split < 1" if field == "val_split" else "an integer >= 0")
    root = (manifest.get("data") or {}).get("root")
    if root is not None and not isinstance(root, str):
        bad("data.root", "a folder path")
    for field in ("path", "abspath", "root"):
        value = (manifest.get("cache") or {}).get(field)
        if value is not None and not isinstance(value, str):
            bad(f"cache.{field}", "a path")
    if manifest.get("quantize") is not None and manifest["quantize"] not in ("none", "dynamic", "float16", "int8"):
        bad("quantize", "none, dynamic, float16 or int8")
    for field in ("signature", "labels_file", "embedflow_version", "created_utc"):
        if manifest.get(field) is not None and not isinstance(manifest[field], str):
            bad(field, "a string")
    rejector = manifest.get("rejector")
    if rejector is not None:
        if not isinstance(rejector, dict):
            bad("rejector", "a table (the unknown-input rule)")
        if rejector.get("method") not in REJECTOR_ARRAYS:
            bad("rejector.method", f"one of {', '.join(REJECTOR_ARRAYS)}")
        if "k" in rejector and not (type(rejector["k"]) is int and 1 <= rejector["k"] <= 10_000):
            bad("rejector.k", "an integer in 1..10000")
        if not _is_number(rejector.get("threshold")):
            bad("rejector.threshold", "a finite number")
        if not (_is_number(rejector.get("rate")) and 0 <= rejector["rate"] <= 1):
            bad("rejector.rate", "a number in 0..1")
        file = rejector.get("file", "rejector.npz")
        if not _is_member_name(file) or not file.endswith(".npz") or file not in files:
            bad("rejector.file", "a .npz file of the folder listed in 'files'")
    return manifest


def check_rejector(model_dir: str | Path, manifest: dict) -> dict[str, np.ndarray] | None:
    """The arrays of a validated manifest's unknown-input rule (None without one), read once from its
    member file (sha256 checked on those bytes) as a plain .npz (no pickles): every array its method needs,
    numeric, finite, of the fingerprint's width. Raises ModelError (exit 5) naming the file otherwise."""
    rejector = manifest.get("rejector")
    if rejector is None:
        return None
    import io

    name = rejector.get("file", "rejector.npz")
    data = read_member(Path(model_dir), manifest, name)
    where = Path(model_dir) / name
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except Exception as e:  # not a zip, an object array (pickle), a damaged member
        raise ModelError(f"cannot read the unknown-input rule {where}: {type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}") from None
    missing = [a for a in REJECTOR_ARRAYS[rejector["method"]] if a not in arrays]
    if missing:
        raise ModelError(f"cannot read the unknown-input rule {where}: rejector arrays missing: {', '.join(missing)}")
    dim = (manifest.get("fingerprint") or {}).get("output_dim")
    for a in REJECTOR_ARRAYS[rejector["method"]]:
        x = arrays[a]
        if x.dtype.kind not in "fiu" or x.ndim not in (1, 2) or not np.isfinite(x).all() or \
                (isinstance(dim, int) and x.shape[-1] != dim):
            raise ModelError(f"cannot read the unknown-input rule {where}: array '{a}' is not a finite numeric "
                             f"array of width {dim} ({x.dtype}, shape {x.shape})")
    return arrays


def read_member(model_dir: Path, manifest: dict, name) -> bytes:
    """The bytes of member `name` of a model folder, read once, after checking that the manifest names a
    plain file of the folder, that it is a regular file (not a link, FIFO or device) and that these very
    bytes have the sha256 the manifest records. Load from the returned bytes, never from the path again."""
    where = Path(model_dir) / MANIFEST
    if not _is_member_name(name):
        raise ModelError(f"{where} names {name!r} as its model file, which is not a file of the folder: "
                         "damaged or tampered with; refusing to load it")
    files = manifest.get("files")
    recorded = files.get(name) if isinstance(files, dict) else None
    if not recorded:
        raise ModelError(f"{where} records no sha256 for {name}: damaged or tampered with; refusing to load it")
    path = Path(model_dir) / name
    data = read_regular(path, "file")
    if hashlib.sha256(data).hexdigest() != recorded:
        raise ModelError(
            f"{path} does not match the sha256 in its manifest: it was modified or replaced; refusing to "
            "load it (model files can run code: only use ones from sources you trust)"
        )
    return data


def recorded_caches(manifest: dict) -> list[Path]:
    """Where the cache a head was fitted on should be: its path as given (relative to where `fit` ran),
    then its absolute path (older manifests lack it)."""
    recorded = manifest.get("cache") or {}
    return [Path(p) for p in dict.fromkeys(filter(None, (recorded.get("path"), recorded.get("abspath"))))]


# --- the one writer ----------------------------------------------------------------------------------


def write_manifest(folder: Path, manifest: dict) -> Path:
    """manifest.json in a staged folder, with `format`, `schema_version` and `created_utc` filled in, and
    signed with this user's key (models.trust; the key is created on first use). Raises ModelError when the
    key cannot be read or created."""
    manifest = {"format": FORMAT, "schema_version": SCHEMA_VERSION, **manifest}
    manifest.setdefault("created_utc", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    manifest.pop(trust.FIELD, None)
    manifest = trust.sign(json.loads(json.dumps(manifest, default=_jsonable)))  # sign what a reader parses
    path = Path(folder) / MANIFEST
    path.write_text(json.dumps(manifest, indent=2))
    return path


def output_lock(target: str | Path, reporter=None) -> WriterLock:
    """The writer lock of a model folder: `.NAME.lock` beside it while held, removed on release (re-entrant
    within a process, so a save inside a locked fit nests). Raises OutputLocked (exit 5) when another process writes the folder."""
    target = Path(target)
    return WriterLock(target.parent / f".{staging_stem(target.name)}.lock", f"model folder {target}", OutputLocked,
                      OutputError, reporter, reentrant=True, hint="wait for it to finish or choose another --out",
                      remove=True)


def check_output_folder(target: str | Path) -> Path:
    """A model folder target must be a named folder that a writer can lock and swap: not '', '.', '..' or
    '/' (no name of its own), not a symbolic link (a second name would bypass the lock on the first, and
    the swap would replace the link, not its target), and not an existing file or other non-folder.
    Returns the target as a Path; raises UsageError (exit 2), before any work."""
    raw = os.fspath(target)
    path = Path(raw)
    if raw.strip() == "" or path.name in ("", ".", ".."):
        raise UsageError(f"an output folder must be a named folder (e.g. models/mine), not {raw!r}")
    if path.is_symlink():
        raise UsageError(f"{path} is a symbolic link: give the folder it leads to ({os.path.realpath(path)}) "
                         "or another name as the output folder")
    if os.path.lexists(path) and not path.is_dir():
        raise UsageError(f"{path} exists and is not a folder: choose another output folder")
    return path


@contextlib.contextmanager
def writing(target: str | Path, reporter=None, *, inside: bool = False):
    """Hold the output lock of `target` and check, before any work, that its folder can be written (and,
    with `inside`, the target folder itself: evaluate writes its report there). Raises OutputLocked, or
    OutputError naming the read-only (or full) folder; a model folder target (not `inside`) that is no
    named folder, a symbolic link or a file is UsageError (check_output_folder).

    A model folder's writer (not `inside`) also gets a scratch folder beside the target for the block
    (fsio.scratch_folder): every temporary file (tempfile, TMPDIR: decoded pixels, Keras' saves, the TFLite
    converter's SavedModel) goes there, never to /tmp, and is removed at the end."""
    target = Path(target) if inside else check_output_folder(target)
    made = _missing_folders(target if inside else target.parent)  # created below (lock file, write check)
    try:
        with output_lock(target, reporter), contextlib.ExitStack() as stack:
            for folder in ([target] if inside else []) + [target.parent]:
                err = check_writable_folder(folder)
                if err is not None:
                    hint = " (--out DIR writes the report elsewhere)" if inside else ""
                    raise OutputError(f"cannot write {target}: {folder} is not writable ({err.strerror or err}); "
                                      f"nothing was done{hint}") from None
            if not inside:
                _enter_scratch(stack, target)
            yield target
    except BaseException:  # refused, failed or interrupted: no empty folder of ours is left behind
        for folder in made:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if empty: another writer's lock file or output keeps it
        raise


def _enter_scratch(stack: contextlib.ExitStack, target: Path) -> Path:
    """Enter fsio.scratch_folder beside `target` on `stack`; a full or read-only folder is OutputError."""
    try:
        return stack.enter_context(scratch_folder(target.parent))
    except OSError as e:
        if not disk_error(e):
            raise
        raise OutputError(f"cannot write {target}: {e.strerror or e} (its scratch folder in {target.parent}); "
                          "nothing was done") from None


def _missing_folders(folder: Path) -> list[Path]:
    """folder and those of its parents that do not exist yet, deepest first."""
    missing = []
    while not os.path.lexists(folder) and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


@contextlib.contextmanager
def staged_folder(target: str | Path, reporter=None):
    """Yields an empty folder beside `target` to write the complete model folder into; when the block ends
    without an exception, fsyncs it and swaps it into place (see the module docstring). On an exception
    the staged folder is removed and the target is left as it was; a full or failing disk (or a read-only
    folder) is OutputError (exit 5). The target's output lock is held throughout (OutputLocked). A target
    that is no named folder, a symbolic link or a file is UsageError (check_output_folder)."""
    target = check_output_folder(target)
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
        except OutputError as e:  # a report writer inside names its file in the staged folder: name the target's
            raise type(e)(str(e).replace(str(staged), str(target))) from None
        except OSError as e:
            if not disk_error(e):
                raise
            where = str(e.filename).replace(str(staged), str(target)) if e.filename else ""
            raise OutputError(f"cannot write {target}: {e.strerror or e}"
                              f"{f' ({where})' if where else ''}; {left_note(target)}") from None
        finally:
            shutil.rmtree(staged, ignore_errors=True)


def left_note(target: Path) -> str:
    """What a failed write (which never swapped) left at `target`: the old folder, or nothing; an old
    folder still aside (its put-back failed too) is named, for the next reader puts it back."""
    if os.path.lexists(target):
        return "it was left as it was"
    aside = list(target.parent.glob(f".{_glob_escape(staging_stem(target.name))}.old-*"))
    if aside:
        return f"the old folder is kept as {aside[0]} and put back by the next command that reads {target}"
    return "nothing was written"


def swap_into_place(staged: Path, target: Path) -> None:
    """Make `staged` the folder at `target`; afterwards `staged` holds the old folder (or nothing)."""
    if not os.path.lexists(target):
        _rename(staged, target)
    elif not _exchange(staged, target):
        aside = target.parent / f".{staging_stem(target.name)}.old-{os.getpid()}"
        shutil.rmtree(aside, ignore_errors=True)
        _rename(target, aside)
        try:
            _rename(staged, target)  # a crash before this line leaves the old folder aside: recover_aside
        except OSError:
            _rename(aside, target)  # the old folder back in place (failing too: recover_aside, next reader)
            raise
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
