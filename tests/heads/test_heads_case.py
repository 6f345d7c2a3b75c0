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
