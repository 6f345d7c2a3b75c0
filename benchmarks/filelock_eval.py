"""Would the `filelock` package replace embedflow.fsio.WriterLock? Each check is a behaviour embedflow's lock
tests require (docs/reliability.md, "Why our own lock and not filelock"):

    python benchmarks/filelock_eval.py [--json benchmarks/results/filelock_eval.json]

1. a second process refused while the lock is held: can it name the holder's pid?
2. is the lock file gone after release (model-folder locks leave nothing beside the folder)?
3. flock failing with ENOLCK (NFS without lockd): acquired with a fallback, or an error?
4. a read-only folder without a lock file (needs `mount`, else "not measured"): acquired, or an error?
"""
import argparse
import errno
import fcntl
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import filelock

ap = argparse.ArgumentParser(description="filelock vs embedflow's lock")
ap.add_argument("--json", type=Path, help="write the result here")
args = ap.parse_args()

out = {"filelock": filelock.__version__}
d = Path(tempfile.mkdtemp())

# 1. the holder's pid, for "in use by process N": a second process tries while we hold it
lock = filelock.FileLock(str(d / "a.lock"))
lock.acquire(timeout=0)
code = f"import filelock,sys\ntry:\n filelock.FileLock({str(d/'a.lock')!r}).acquire(timeout=0)\nexcept filelock.Timeout as e:\n print(repr(e))"
out["second_process_sees"] = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip()
out["lock_file_content_while_held"] = (d / "a.lock").read_bytes().decode()
pid = None
try:
    pid = lock.pid
except Exception as e:
    pid = f"{type(e).__name__}: {e}"
out["lock.pid (native)"] = pid
lock.release()
# 2. removed on release? (model-folder locks must leave no file beside the folder)
out["lock_file_left_after_release"] = (d / "a.lock").exists()

# 3. a filesystem without locks: flock fails with ENOLCK (NFS without lockd)
real = fcntl.flock
def enolck(fd, op):
    raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))
fcntl.flock = enolck
try:
    filelock.FileLock(str(d / "b.lock")).acquire(timeout=0)
    out["ENOLCK"] = "acquired (fallback)"
except BaseException as e:
    out["ENOLCK"] = f"{type(e).__name__}: {e}"
fcntl.flock = real

# 4. a read-only folder with no lock file (an unchanged embed rerun must still run): EROFS on create
ro = d / "ro"; ro.mkdir()
mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)], capture_output=True).returncode == 0
if mounted:
    try:
        filelock.FileLock(str(ro / "c.lock")).acquire(timeout=0)
        out["read_only_folder"] = "acquired"
    except BaseException as e:
        out["read_only_folder"] = f"{type(e).__name__}: {e}"
    subprocess.run(["umount", "-l", str(ro)])
else:
    out["read_only_folder"] = "not measured (mount not allowed)"
print(json.dumps(out, indent=2))
if args.json:
    args.json.write_text(json.dumps(out, indent=2) + "\n")
