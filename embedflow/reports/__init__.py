"""What a person reads: metrics (metrics), figures (plots), report files (write) and contact sheets
(sheets)."""

from .metrics import classification_report, format_report
from .plots import plot_confusion
from .write import write_report

__all__ = ["classification_report", "format_report", "plot_confusion", "write_report"]
