"""The allowed range of every numeric option, in one table used by the API (and so by the CLI).

`check(**values)` raises UsageError (exit 2) with one line naming the option (as the CLI spells it) and
its range; None means "the default" and is not checked. Ranges are what the code can honour without
tracebacks or unbounded memory: e.g. at most 4096 images a batch and 4 workers per CPU core.
"""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass

from .errors import UsageError

MAX_BATCH = 4096
MAX_EPOCHS = 100_000


def max_workers() -> int:
    return 4 * (os.cpu_count() or 1)


@dataclass(frozen=True)
class Range:
    """A number in [low, high] (open at either end when low_open/high_open); integer when `integer`."""

    flag: str
    low: float
    high: float | None = None  # None: a callable bound, see max_workers
    integer: bool = False
    low_open: bool = False
    high_open: bool = False

    def upper(self) -> float:
        return max_workers() if self.high is None else self.high

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a finite number"
        low = f"> {self.low:g}" if self.low_open else f">= {self.low:g}"
        high = f"< {self.upper():g}" if self.high_open else f"<= {self.upper():g}"
        return f"{kind} {low} and {high}"

    def ok(self, value) -> bool:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return False
        if self.integer and not isinstance(value, numbers.Integral):
            return False
        v = float(value) if not isinstance(value, numbers.Integral) else value
        if isinstance(v, float) and not math.isfinite(v):
            return False
        above = v > self.low if self.low_open else v >= self.low
        below = v < self.upper() if self.high_open else v <= self.upper()
        return above and below


RANGES: dict[str, Range] = {
    # fit and its heads
    "C": Range("--C", 0, 1e6, low_open=True),
    "seed": Range("--seed", 0, 2**32 - 1, integer=True),
    "val_split": Range("--val-split", 0, 1, high_open=True),
    "epochs": Range("--epochs", 1, MAX_EPOCHS, integer=True),
    "k": Range("--k", 1, 10_000, integer=True),
    "learning_rate": Range("--learning-rate", 0, 1, low_open=True),
    "dropout": Range("--dropout", 0, 1, high_open=True),
    "patience": Range("--patience", 0, MAX_EPOCHS, integer=True),
    "batch_size": Range("--batch-size", 1, MAX_BATCH, integer=True),
    "reject_rate": Range("--reject-rate", 0, 1, high_open=True),
    # finetune (stage 1 may be skipped: 0 epochs)
    "stage1_epochs": Range("--epochs", 0, MAX_EPOCHS, integer=True),
    "fine_tune_epochs": Range("--fine-tune-epochs", 0, MAX_EPOCHS, integer=True),
    "unfreeze_top": Range("--unfreeze-top", 0, 10_000, integer=True),
    "fine_tune_learning_rate": Range("--fine-tune-learning-rate", 0, 1, low_open=True),
    "label_smoothing": Range("--label-smoothing", 0, 1, high_open=True),
    "average_from": Range("--average-from", 0, MAX_EPOCHS, integer=True),
    "rotation": Range("--rotation", 0, 1),
    "zoom": Range("--zoom", 0, 1, high_open=True),
    # embed
    "workers": Range("--workers", 1, None, integer=True),  # threads on this machine: 4 per CPU core
    "ray_workers": Range("--workers", 1, 100_000, integer=True),  # Ray actors across a cluster
    # predict, neighbors, duplicates, audit
    "top_k": Range("--top-k", 1, 10_000, integer=True),
    "neighbors_k": Range("--k", 1, 10_000, integer=True),
    "threshold": Range("--threshold", 0, 1, low_open=True),
    "top": Range("--top", 0, 1_000_000, integer=True),
}


def check(**values) -> None:
    """Raise UsageError for the first value outside its range in RANGES (None values are skipped);
    names not in the table are left to their own checks."""
    for name, value in values.items():
        rule = RANGES.get(name)
        if rule is None or value is None:
            continue
        if not rule.ok(value):
            raise UsageError(f"{rule.flag} must be {rule.describe()}, got {value!r}")
