"""The one channel through which library code talks to a person.

Library code never prints. It receives a Reporter (the CLI supplies a rich one; the Python API defaults
to a silent one) and calls these methods. Subclass and override what you need.
"""

from __future__ import annotations


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
