"""A model folder that cannot fit on the output disk is refused before training, not after it: a fresh
tester's 12 MB disk held the decoded pixels, trained for 27 s, then could not write the model (exit 5,
everything lost). Now: one line, exit 5, no epoch run, nothing left beside --out."""

from __future__ import annotations

import shutil
from collections import namedtuple

import pytest

from ..conftest import SIZE, make_dataset
from ..models.test_output_safety import small_disk

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def test_finetune_checks_room_for_the_model_before_training(cli, tmp_path, weights_file, monkeypatch):
    data = make_dataset(tmp_path / "data", per_class=4)
    disk = tmp_path / "disk"
    with small_disk(disk, "16m") as real:
        if not real:  # no tmpfs here: the same free space, as the file system reports it
            Usage = namedtuple("Usage", "total used free")
            monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(16 << 20, 4 << 20, 12 << 20))
        r = cli("finetune", data, "--out", disk / "ft", "--weights", weights_file, "--image-size", str(SIZE),
                "--epochs", "1", "--fine-tune-epochs", "1", "--no-refit", expect=5)
        errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "the model needs about" in errors[0] and "before training" in errors[0], r.stderr
        assert "epoch 1/1" not in r.stderr + r.stdout  # no training ran
        assert sorted(p.name for p in disk.iterdir() if p.name != "filler") == []  # no scratch, no folder, no lock
