"""The one channel through which library code talks to a person.

Library code never prints. It receives a Reporter and calls these methods; subclass and override what
you need. The CLI supplies a rich one. The Python API's `reporter="auto"` (its default) resolves, once
per call, through as_reporter():

* in a Jupyter/IPython kernel or on a terminal (stderr is a TTY): a ProgressReporter, a tqdm.auto bar
  (a widget in a notebook) per countable task, info lines on stderr;
* elsewhere (a script in a pipe, a batch job): no bars, no info lines.

Either way warnings are issued with Python's `warnings.warn(..., EmbedflowWarning)`, so they reach the
user once and obey `warnings` filters. `reporter=None` (or SILENT) is silent, warnings included; any
Reporter instance is used as given.
"""

from __future__ import annotations

import sys
import warnings


class Reporter:
    """Silent reporter: the default for library use."""

    def info(self, message: str) -> None:
        """A line worth telling a person (what was done, where it was written)."""

    def warn(self, message: str) -> None:
        """Something went wrong but the run goes on (a skipped file, a fallback)."""

    def start(self, description: str, total: int) -> None:
        """A countable task begins (images to embed, epochs to train)."""

    def advance(self, n: int = 1) -> None:
        """n more units of the current task are done."""

    def finish(self) -> None:
        """The current task is over (successfully or not)."""


class ListReporter(Reporter):
    """Keeps every message; handy in tests and notebooks."""

    def __init__(self) -> None:
        self.infos: list[str] = []
        self.warnings: list[str] = []
        self.advanced = 0

    def info(self, message: str) -> None:
        self.infos.append(message)

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    def advance(self, n: int = 1) -> None:
        self.advanced += n


SILENT = Reporter()


class EmbedflowWarning(UserWarning):
    """A skipped file, a fallback: the run went on. Issued by the "auto" reporters."""


class WarningsReporter(Reporter):
    """No progress and no info lines; warnings go to Python's warnings module."""

    def warn(self, message: str) -> None:
        warnings.warn(message, EmbedflowWarning, stacklevel=3)


class ProgressReporter(WarningsReporter):
    """A tqdm.auto progress bar per task (a widget in a notebook, a text bar on a terminal), info lines on
    stderr (through tqdm.write, so they do not break a running bar), warnings through `warnings`."""

    def __init__(self) -> None:
        self._bar = None

    def info(self, message: str) -> None:
        from tqdm.auto import tqdm

        tqdm.write(message, file=sys.stderr)

    def start(self, description: str, total: int) -> None:
        from tqdm.auto import tqdm

        self.finish()
        self._bar = tqdm(total=total, desc=description, leave=False, dynamic_ncols=True)

    def advance(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def interactive() -> bool:
    """True in an IPython/Jupyter kernel or when stderr is a terminal."""
    shell = sys.modules.get("IPython") and sys.modules["IPython"].get_ipython()
    if shell is not None and "IPKernelApp" in getattr(shell, "config", {}):
        return True
    return bool(getattr(sys.stderr, "isatty", None) and sys.stderr.isatty())


def as_reporter(reporter: Reporter | str | None = "auto") -> Reporter:
    """The Reporter for an API call: None -> SILENT, "auto" -> a ProgressReporter when interactive()
    (notebook or terminal), else a WarningsReporter; any other object is used as the reporter (it needs
    Reporter's methods). TypeError for another string."""
    if reporter is None:
        return SILENT
    if isinstance(reporter, str):
        if reporter != "auto":
            raise TypeError(f"reporter must be a Reporter, 'auto' or None, got {reporter!r}")
        return ProgressReporter() if interactive() else WarningsReporter()
    return reporter
