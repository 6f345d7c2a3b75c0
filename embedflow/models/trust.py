"""Which model folders this installation wrote: manifests signed with a per-user key.

A model folder's manifest records the sha256 of every member file. `write_manifest` adds an HMAC-SHA256 of
the manifest's canonical JSON, keyed with a random 256-bit key that is kept outside any project:
`$EMBEDFLOW_SIGNING_KEY` (a file path) if set, else `$XDG_CONFIG_HOME/embedflow/signing.key` (default
`~/.config/embedflow/signing.key`). The key is created, mode 0600, the first time a model is saved, and is
never written into a model folder. A folder whose signature verifies with this key was written by this
user on this installation (or by someone who can read the key); any other folder is "foreign", and
`load_model` refuses to unpickle it unless the caller passes `trust=True` (`--trust`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import stat
from pathlib import Path

from ..errors import ModelError, UntrustedModel

KEY_ENV = "EMBEDFLOW_SIGNING_KEY"
FIELD = "signature"
ALGORITHM = "hmac-sha256"


def key_path() -> Path:
    """Where the signing key lives: $EMBEDFLOW_SIGNING_KEY, else $XDG_CONFIG_HOME/embedflow/signing.key
    (default ~/.config/embedflow/signing.key)."""
    if os.environ.get(KEY_ENV):
        return Path(os.environ[KEY_ENV]).expanduser()
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "embedflow" / "signing.key"


def _read_key(path: Path) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ModelError(f"cannot read the signing key {path}: {e.strerror or e} (set {KEY_ENV} to another "
                         "file)") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ModelError(f"the signing key {path} is not a regular file")
        if os.name == "posix" and st.st_mode & 0o077:
            raise ModelError(f"the signing key {path} can be read or written by other users (mode "
                             f"{stat.S_IMODE(st.st_mode):04o}): run `chmod 600 {path}`")
        text = os.read(fd, 4096).decode("ascii", "replace").strip()
    finally:
        os.close(fd)
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) < 32:
        raise ModelError(f"the signing key {path} is damaged; delete it (a new one is made on the next save; "
                         "model folders signed with the old one then need --trust)")
    return key


def signing_key(create: bool = False) -> bytes | None:
    """This user's signing key (32 random bytes); None when there is none yet and `create` is False. With
    `create`, a missing key is made (0600, written beside and linked into place, so two first saves agree).
    Raises ModelError when the key cannot be read or created, or is readable by other users."""
    path = key_path()
    key = _read_key(path)
    if key is not None or not create:
        return key
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
        try:
            os.write(fd, (secrets.token_hex(32) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # fails if another process made the key first: theirs wins
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    except OSError as e:
        raise ModelError(f"cannot create the signing key {path}: {e.strerror or e} (set {KEY_ENV} to a writable "
                         "file path)") from None
    return _read_key(path)


def canonical(manifest: dict) -> bytes:
    """The bytes that are signed: the manifest without its signature, as sorted, compact JSON."""
    body = {k: v for k, v in manifest.items() if k != FIELD}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _mac(key: bytes, manifest: dict) -> str:
    return hmac.new(key, canonical(manifest), hashlib.sha256).hexdigest()


def sign(manifest: dict) -> dict:
    """The manifest (a JSON round-tripped dict) with its `signature` field set, creating the key if needed."""
    return {**manifest, FIELD: f"{ALGORITHM}:{_mac(signing_key(create=True), manifest)}"}


def signed_here(manifest: dict) -> bool:
    """True when the manifest carries a valid signature of this user's key (written by this installation)."""
    value = manifest.get(FIELD)
    if not isinstance(value, str) or not value.startswith(ALGORITHM + ":"):
        return False
    key = signing_key()
    if key is None:
        return False
    return hmac.compare_digest(value.split(":", 1)[1], _mac(key, manifest))


def untrusted_message(model_dir) -> str:
    return (f"model folder {model_dir} was not written by this installation; pass --trust (trust=True in Python) "
            "if you trust its source")


def require_trust(model_dir, trusted: bool) -> None:
    """Raise UntrustedModel (exit 5) unless `trusted` (signed here, or the caller's explicit trust=True)."""
    if not trusted:
        raise UntrustedModel(untrusted_message(model_dir))
