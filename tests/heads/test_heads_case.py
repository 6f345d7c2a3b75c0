"""Head and kernel names are taken in any letter case on the command line, as --precision is."""

from __future__ import annotations

import json

from .test_heads_tiny_classes import tiny_cache


def test_head_and_kernel_names_in_any_case(cli, tmp_path):
    tiny_cache(tmp_path / "c.h5", (6, 6, 6))
    cli("fit", "--cache", tmp_path / "c.h5", "--head", "SVM", "--kernel", "Linear", "--val-split", "0",
        "--out", tmp_path / "m")
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert manifest["head"] == "svm" and manifest["hyperparameters"]["kernel"] == "linear"


def test_fit_says_which_kernel_and_calibration_auto_chose(cli, tmp_path):
    """`--kernel auto` decides by the number of classes: fit's output, its JSON and the card say what it chose."""
    tiny_cache(tmp_path / "c.h5", (6, 6, 6))
    r = cli("fit", "--cache", tmp_path / "c.h5", "--head", "svm", "--val-split", "0", "--out", tmp_path / "m")
    assert "(svm: rbf kernel, sigmoid (Platt" in r.stdout, r.stdout
    out = json.loads(cli("fit", "--cache", tmp_path / "c.h5", "--head", "svm", "--kernel", "linear", "--val-split",
                         "0", "--out", tmp_path / "m2", "--json").stdout)
    assert out["kernel"] == "linear" and out["calibration"].startswith("temperature"), out
    card = (tmp_path / "m2" / "README.md").read_text()
    assert "an SVM head (linear one-vs-rest kernel, temperature" in card
