"""The mistakes a user makes with `embedflow embed` and `info`: one line each, the documented exit code."""

from __future__ import annotations


def test_user_mistakes_get_one_line(cli, tmp_path):
    r = cli("embed", tmp_path / "missing", expect=2)
    assert r.stderr.strip() == f"error: folder not found: {tmp_path / 'missing'}"
    (tmp_path / "empty").mkdir()
    r = cli("embed", tmp_path / "empty", expect=2)
    assert r.stderr.startswith("error: no images found") and len(r.stderr.strip().splitlines()) == 1
    r = cli("embed", tmp_path, "--image-size", "50", tiny=False, expect=2)
    assert "between 96 and 224" in r.stderr
    r = cli("info", "--cache", tmp_path / "none.h5", expect=4)
    assert "run `embedflow embed FOLDER` first" in r.stderr
