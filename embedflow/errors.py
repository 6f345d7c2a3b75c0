"""Typed exceptions. The CLI turns any EmbedflowError into one line and a non-zero exit."""


class EmbedflowError(Exception):
    """Base class for every error embedflow raises on purpose."""

    exit_code = 1


class UsageError(EmbedflowError):
    """A user mistake: a missing folder, an impossible option, a wrong path."""

    exit_code = 2


class DatasetError(UsageError):
    """The image folder cannot be used as it is (empty, one class, a class too small)."""


class FingerprintMismatch(EmbedflowError):
    """An artifact was made with another backbone, weights or image size than the one asked for."""

    exit_code = 3


class CacheError(EmbedflowError):
    """The cache is missing, unreadable, or of a schema this version does not know."""

    exit_code = 4


class CacheDamaged(CacheError):
    """The cache is inconsistent or damaged. `problems`: what is wrong, each a dict with `problem` (in
    words) and, for problems of rows, `count` and `keys` (a few of them); `path`: the cache."""

    def __init__(self, path, problems: list[dict]):
        self.path, self.problems = str(path), list(problems)
        first = problems[0]["problem"] if problems else "no problem named"
        more = f"; and {len(problems) - 1} more problem{'s' if len(problems) > 2 else ''}" if len(problems) > 1 else ""
        super().__init__(f"cache {path} is damaged ({first}{more}); embed again with --rebuild")


class CacheLocked(CacheError):
    """Another process is writing the cache."""


class ModelError(EmbedflowError):
    """A model folder is missing, incomplete, tampered with, or of an unknown kind."""

    exit_code = 5


class OutputError(ModelError):
    """An output (a model folder, a report) cannot be written: its folder is read-only, the disk is full
    or failing. What was there before is left as it was."""


class OutputLocked(OutputError):
    """Another process is writing the same model folder (or its reports)."""


class UntrustedModel(ModelError):
    """A model folder this installation did not write (no valid signature of this user's key) would be
    unpickled or loaded as Keras code: refused unless the caller passes trust=True (--trust)."""


class WeightsError(EmbedflowError):
    """Backbone weights cannot be found or loaded."""

    exit_code = 6


class StrictModeError(EmbedflowError):
    """Files were skipped while --strict asked for none to be."""

    exit_code = 7


class BadImage(Exception):
    """One file cannot be used (unreadable, not an image, corrupt); carries a short reason. Raised per
    file by hashing and decoding and caught by the run, which skips the file: it never escapes a run."""


class Interrupted(EmbedflowError):
    """Ctrl-C or SIGTERM stopped a run; what it had committed is kept (rerun to resume)."""

    exit_code = 130
