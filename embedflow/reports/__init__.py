"""What a person reads: metrics (metrics), figures (plots), report files (write) and contact sheets
(sheets)."""

from .metrics import classification_report, format_report
from .plots import plot_confusion
from .sheets import neighbors_sheet
from .write import write_report

__all__ = ["classification_report", "format_report", "neighbors_sheet", "plot_confusion", "write_report"]
