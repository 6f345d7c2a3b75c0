"""File-system helpers every writer shares: names derived from a user's name that stay within the
filesystem's limit, and the one writer lock (flock on a lock file holding the writer's pid).

Names: a file name is at most NAME_MAX (255) bytes on Linux and macOS. A name derived from a user's one
(`<cache>.lock`, `.NAME.tmp-PID`, `cache/FOLDER-HASH.h5`, `NNN-PHOTO-gradcam.png`) could exceed it: `fit_name`
shortens the user's part and adds a hash of it, so derived names stay distinct and deterministic.

Locks: `WriterLock` takes an exclusive flock (released by the OS when the process dies) on a lock file
beside what it protects and writes the holder's pid into it. Where the filesystem has no locks (ENOLCK:
NFS without lockd), it warns once through the reporter and goes on; where the folder cannot be written,
`writable` is False and the caller decides.

Scratch: `scratch_folder(parent)` is one folder of ours beside what a run writes (a model folder's parent,
EMBEDFLOW_HOME/backbones for a conversion) holding every temporary file of the run, Keras' and the TFLite
converter's included (tempfile and TMPDIR point there); it is removed when the run ends, and one that a
killed run left (named with its pid and machine) is removed by the next run in that folder.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import threading
import time
from pathlib import Path

NAME_MAX = 255  # bytes in one path component (Linux, macOS)
HASH_CHARS = 10
READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)
NO_LOCKS = (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP)
DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM)


def short_stem(stem: str, room: int = 0, limit: int = NAME_MAX) -> str:
    """`stem` unchanged when it takes at most limit - room bytes (UTF-8), else its longest prefix that
    fits with "~" and a 10-character hash of the whole stem (never splitting a character)."""
    budget = limit - room
    if len(os.fsencode(stem)) <= budget:
        return stem
    digest = hashlib.sha256(os.fsencode(stem)).hexdigest()[:HASH_CHARS]
    keep = budget - 1 - HASH_CHARS
    if keep < 1:
        raise ValueError(f"no room for a name in {budget} bytes")
    cut = os.fsencode(stem)[:keep].decode("utf-8", errors="ignore")
    while len(os.fsencode(cut)) > keep:  # surrogate-escaped bytes: drop characters until it fits
        cut = cut[:-1]
    return f"{cut}~{digest}"


def fit_name(stem: str, tail: str = "", head: str = "", limit: int = NAME_MAX) -> str:
    """head + stem + tail, within `limit` bytes: head and tail (a prefix such as "." and a suffix such as
    ".lock" or "-gradcam.png") are kept whole, the stem is shortened with a hash when needed."""
    return head + short_stem(stem, len(os.fsencode(head + tail)), limit) + tail


def sibling(path: str | os.PathLike, tail: str, head: str = "") -> Path:
    """The path beside `path` named head + its name + tail, within NAME_MAX (e.g. `<cache>.lock`)."""
    path = Path(path)
    return path.with_name(fit_name(path.name, tail, head))


STAGE_ROOM = 32  # bytes kept for "." + ".tmp-"/".old-"/".lock" + a pid around a staged or aside name


def staging_stem(name: str) -> str:
    """The part of a staged, aside or lock name that comes from the target's name (see STAGE_ROOM)."""
    return short_stem(name, STAGE_ROOM)


def disk_error(e: BaseException) -> bool:
    """True for an OSError that a full disk, a failing disk or a read-only folder causes."""
    return isinstance(e, OSError) and e.errno in DISK_ERRORS


# --- the writer lock ----------------------------------------------------------------------------------

_held: dict[str, list] = {}  # lock path -> [fd, depth]: re-entrant locks held by this process
_held_guard = threading.Lock()


class WriterLock:
    """Exclusive writer lock: flock on `lock_path`, which holds the writer's pid.

    `what` names the protected thing in messages ("cache cache/embeddings.h5"). `busy` (an
    EmbedflowError class) is raised when another process holds the lock, `failed` on any other I/O error.
    `reentrant`: a second acquisition in the same process (e.g. a save inside a locked fit) nests
    instead of being refused. `remove`: the holder deletes the lock file when it releases it (no lock file
    left beside a model folder); an acquirer then checks that the file it locked is still the one at
    `lock_path` (else it was removed in between: it retries), the usual unlink-safe flock protocol.
    After entering: `locked` (the flock is held), `writable` (the lock's folder can be written)."""

    def __init__(self, lock_path: Path, what: str, busy: type, failed: type, reporter=None, *,
                 reentrant: bool = False, hint: str = "wait for it to finish", remove: bool = False):
        self.path = Path(lock_path)
        self.what = what
        self.busy, self.failed = busy, failed
        self.reporter = reporter
        self.reentrant = reentrant
        self.hint = hint
        self.locked = False
        self.writable = True
        self.remove = remove
        self._fd: int | None = None
        self._nested = False

    def __enter__(self) -> "WriterLock":
        try:
            import fcntl
        except ImportError:  # Windows: no flock; go on as on a filesystem without locks
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)  # as _open would
            except OSError as e:
                if e.errno not in READ_ONLY:
                    raise self.failed(f"cannot create the folder of {self.path}: {e.strerror or e}") from None
                self.writable = False
            self._no_locks("this system has no flock")
            return self
        if self.reentrant:
            with _held_guard:
                held = _held.get(os.path.abspath(self.path))
                if held is not None:
                    held[1] += 1
                    self._nested, self.locked = True, True
                    return self
        for _ in range(100):
            fd = self._open()
            if fd is None:
                return self
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                return self._refused(fd, e)
            if not self.remove or _same_file(fd, self.path):
                break
            os.close(fd)  # the holder before us removed the file we locked: lock the one there now
        else:
            raise self.failed(f"cannot lock {self.path}: it keeps being replaced")
        return self._held(fd)

    def _refused(self, fd: int, e: OSError) -> "WriterLock":
        """No flock: on a filesystem without locks warn once and go on; else raise busy or failed."""
        if e.errno in NO_LOCKS:
            os.close(fd)
            self._no_locks(e.strerror)
            return self
        holder = _holder_pid(fd)
        os.close(fd)
        if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise self.busy(f"{self.what} is in use by process {holder}; {self.hint}") from None
        raise self.failed(f"cannot lock {self.path}: {e.strerror or e}") from None

    def _no_locks(self, why: str) -> None:
        if self.reporter is not None:
            self.reporter.warn(f"cannot lock {self.path} ({why}): this filesystem has no file locks; "
                               f"make sure no other run writes {self.what} at the same time")

    def _held(self, fd: int) -> "WriterLock":
        self._fd, self.locked = fd, True
        if self.reentrant:
            with _held_guard:
                _held[os.path.abspath(self.path)] = [fd, 1]
        if self.writable:
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, str(os.getpid()).encode(), 0)
            except OSError:
                pass  # a full disk: the lock holds without the pid (a second writer is told "process ?")
        return self

    def _open(self) -> int | None:
        """The lock file's descriptor: read-write, or read-only in a folder that cannot be written (an
        existing lock file still shows a writer), or None when there is none to open."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            if e.errno not in READ_ONLY:
                raise self.failed(f"cannot create the lock file {self.path}: {e.strerror or e}") from None
        self.writable = False
        try:
            return os.open(self.path, os.O_RDONLY)
        except OSError:
            return None

    def __exit__(self, *exc) -> None:
        if self._nested:
            with _held_guard:
                _held[os.path.abspath(self.path)][1] -= 1
            self._nested = self.locked = False
            return
        if self._fd is not None:
            if self.reentrant:
                with _held_guard:
                    _held.pop(os.path.abspath(self.path), None)
            if self.remove and self.writable:
                with contextlib.suppress(OSError):  # removed while held: a waiter re-checks (see __enter__)
                    os.unlink(self.path)
            os.close(self._fd)  # closing releases the flock
            self._fd = None
        self.locked = False


def _same_file(fd: int, path: Path) -> bool:
    """Whether the open file `fd` is still the file at `path` (not removed or replaced since it was opened)."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


def _holder_pid(fd: int) -> str:
    """The pid written in a lock file by its holder. A holder that has just taken the lock writes its pid
    right after: wait a moment for it, so a stale pid or an empty file is not reported."""
    time.sleep(0.05)
    for _ in range(20):
        try:
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        except OSError:
            return "?"
        if text:
            return text
        time.sleep(0.01)
    return "?"


def lock_holder(lock_path: Path) -> int | None:
    """Pid of the process holding the lock file (-1 when it is unknown), or None (also where the system
    has no flock)."""
    try:
        import fcntl
    except ImportError:
        return None

    try:
        fd = os.open(lock_path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in NO_LOCKS:
            return None
        text = _holder_pid(fd)
        return int(text) if text.isdigit() else -1
    finally:
        os.close(fd)
    return None


def new_file_mode() -> int | None:
    """The permission bits open() gives a new file in this process (0o666 less the umask, e.g. 0o644), read
    from /proc/self/status (Linux >= 4.7) without changing the umask (process-wide state); None when that
    cannot be read. tempfile.mkstemp makes files 0o600 whatever the umask: a file it makes that then
    becomes the user's (renamed into place) gets these bits instead, so a shared EMBEDFLOW_HOME works as
    the user's umask says (`fchmod_as_umask`)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return None


def fchmod_as_umask(fd: int) -> None:
    """Give the open file `fd` (from tempfile.mkstemp) the bits a plain open() would (new_file_mode); keeps
    mkstemp's 0o600 when the umask cannot be read (never more open than asked)."""
    mode = new_file_mode()
    if mode is not None:
        os.fchmod(fd, mode)


def check_writable_folder(folder: Path) -> OSError | None:
    """None when a file can be created in `folder` (created if missing), else the OSError that says why.
    Tries for real (a temporary file, removed at once): permission bits say nothing to root, and a
    read-only mount or a full inode table only shows when writing."""
    import tempfile

    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder, prefix=".embedflow-probe-"):
            pass
    except OSError as e:
        return e
    return None


def free_bytes_short(folder: str | os.PathLike, need: int) -> int | None:
    """The free bytes of `folder`'s file system when they are fewer than `need` bytes, else None (None too
    when the file system cannot say: the write itself then reports a full disk). The one free-space check
    before a large write (cache, TFLite conversion, fine-tuned model)."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return None
    return free if free < need else None


# --- scratch folders ----------------------------------------------------------------------------------

SCRATCH_PREFIX = ".embedflow-scratch-"


def host_tag() -> str:
    """8 hex digits naming this machine in scratch folder names: a folder shared between machines (NFS)
    holds other machines' scratch, whose pids mean nothing here."""
    import socket

    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: another user's live process
        return True
    return True


def remove_stale_scratch(parent: Path) -> None:
    """Remove the scratch folders in `parent` that processes of this machine which are gone left (a run
    killed with SIGKILL, or by the OOM killer, removes nothing itself). Named `.embedflow-scratch-PID-HOST-*`."""
    tag = host_tag()
    for folder in Path(parent).glob(SCRATCH_PREFIX + "*"):
        pid, _, rest = folder.name[len(SCRATCH_PREFIX):].partition("-")
        if pid.isdigit() and rest.startswith(tag + "-") and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def temporary_files_in(folder: Path):
    """Python's tempfile (what Keras' saving and the TFLite converter's SavedModel use) and TMPDIR (native
    code) point to `folder` inside the block; both are put back after it. Process-wide: enter it where no
    other thread makes temporary files (before the embedding threads start, for instance)."""
    import tempfile

    saved, saved_env = tempfile.tempdir, os.environ.get("TMPDIR")
    tempfile.tempdir, os.environ["TMPDIR"] = str(folder), str(folder)
    try:
        yield folder
    finally:
        tempfile.tempdir = saved
        if saved_env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved_env


@contextlib.contextmanager
def scratch_folder(parent: Path):
    """A new folder `parent/.embedflow-scratch-PID-HOST-XXXX` for every temporary file of the block (see
    temporary_files_in), removed when the block ends, however it ends; the stale ones of processes that are
    gone are removed first (remove_stale_scratch). Raises OSError when `parent` cannot be written."""
    import tempfile

    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    remove_stale_scratch(parent)
    folder = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-{host_tag()}-", dir=parent))
    try:
        with temporary_files_in(folder):
            yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
