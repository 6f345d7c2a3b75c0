"""What a person reads: metrics (metrics), figures (plots), report files (write), contact sheets
(sheets) and the model card with labels.txt (model_card)."""

from .metrics import classification_report, format_report
from .model_card import deploy_files, labels_text, model_card
from .plots import plot_confusion
from .predictions import ConfusedPair, ImagePrediction, add_to_report, confused_pairs, image_predictions, top_losses
from .sheets import neighbors_sheet
from .files import write_report
from .write import write_atomically, write_text_atomically

__all__ = ["ConfusedPair", "ImagePrediction", "add_to_report", "classification_report", "confused_pairs", "deploy_files", "format_report", "image_predictions", "labels_text", "model_card", "neighbors_sheet",
           "plot_confusion", "top_losses", "write_atomically", "write_report", "write_text_atomically"]
