"""Keeping TensorFlow's and LiteRT's native start-up chatter off the terminal."""

from __future__ import annotations

import contextlib
import os
import sys


def quiet_tensorflow() -> None:
    """Keep TensorFlow's start-up chatter off the terminal (TF_CPP_MIN_LOG_LEVEL=0 keeps all of it)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    if "tensorflow" not in sys.modules and os.environ["TF_CPP_MIN_LOG_LEVEL"] != "0":
        # TF 2.21 writes absl/oneDNN/CUDA notices to file descriptor 2 while it loads and first picks a
        # device, ignoring TF_CPP_MIN_LOG_LEVEL; Python errors still surface after the descriptor is back.
        with stderr_fd_silenced():
            import tensorflow as tf

            tf.constant(0)
    import logging

    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    try:
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
    except ImportError:
        pass


@contextlib.contextmanager
def stderr_fd_silenced():
    """File descriptor 2 (where C++ libraries write) points to /dev/null inside the block."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


_STDERR_LOCK = __import__("threading").Lock()


class _native_stderr_silenced:
    """Silence what native code writes to file descriptor 2 for a moment (LiteRT logs on creation).
    Python-level errors are unaffected; the interpreter's own exceptions still propagate."""

    def __enter__(self):
        import sys

        _STDERR_LOCK.acquire()
        try:
            sys.stderr.flush()
            self._saved = os.dup(2)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            os.close(devnull)
        except OSError:
            self._saved = None
        return self

    def __exit__(self, *exc):
        try:
            if self._saved is not None:
                os.dup2(self._saved, 2)
                os.close(self._saved)
        finally:
            _STDERR_LOCK.release()
