"""One test on real photos and the real pretrained weights (skipped where they are absent)."""

from __future__ import annotations

import json

import pytest

from ..conftest import FLOWERS, imagenet_keras_home as _keras_home


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.skipif(not FLOWERS.is_dir() or _keras_home() is None, reason="needs flowers-dev and the ImageNet weights")
def test_flowers_accuracy_floor(tmp_path, monkeypatch):
    """300 real photos for training, 100 others held out: the logreg head must be clearly good."""
    from typer.testing import CliRunner

    from embedflow.cli import app

    monkeypatch.setenv("KERAS_HOME", str(_keras_home()))
    monkeypatch.chdir(tmp_path)
    for cls in sorted(p.name for p in FLOWERS.iterdir() if p.is_dir()):
        photos = sorted((FLOWERS / cls).glob("*.jpg"))
        for split, chosen in (("train", photos[:60]), ("test", photos[60:80])):
            (tmp_path / split / cls).mkdir(parents=True)
            for p in chosen:
                (tmp_path / split / cls / p.name).symlink_to(p)
    runner = CliRunner()

    def run(*args):
        r = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
        assert r.exit_code == 0, r.stderr
        return r

    run("embed", "train", "--quiet")
    fit = json.loads(run("fit", "--head", "logreg", "--json").stdout)
    assert fit["report"]["accuracy"] >= 0.75  # 60 validation photos
    report = json.loads(run("evaluate", "models/logreg", "test", "--json").stdout)
    assert report["n"] == 100
    assert report["accuracy"] >= 0.80, report["accuracy"]  # ~88% with the full flowers-dev
