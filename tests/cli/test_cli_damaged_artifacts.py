"""Trusted artifacts: a damaged or tampered model folder or cache is refused with one clear line and its
exit code (never a traceback, never unpickled); --strict on evaluate; exit codes as documented."""

from __future__ import annotations

import json
import shutil

import h5py
import pytest

from ..conftest import embed_and_fit, make_dataset


@pytest.fixture(scope="module")
def trained_once(tmp_path_factory, weights_file):
    return embed_and_fit(tmp_path_factory.mktemp("trained"), weights_file)


@pytest.fixture
def trained(trained_once, cli, tmp_path):
    """A dataset, its cache and a logreg model folder in the test's working folder (cli chdirs there)."""
    for name in ("data", "cache", "models"):
        shutil.copytree(trained_once / name, tmp_path / name)
    return tmp_path


def _edit_manifest(model, change):
    path = model / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


TAMPERING = {
    "head modified": (lambda m: (m / "head.joblib").open("ab").write(b"\x00"), "does not match the sha256 in its manifest"),
    "head missing": (lambda m: (m / "head.joblib").unlink(), "is incomplete: head.joblib is missing"),
    "head outside the folder": (lambda m: _edit_manifest(m, lambda d: d.update(head_file="../../cache/embeddings.h5")),
                                "which is not a file of the folder"),
    "no recorded hash": (lambda m: _edit_manifest(m, lambda d: d.update(files={})), "records no sha256 for head.joblib"),
    "files not a table": (lambda m: _edit_manifest(m, lambda d: d.update(files="x")), "records no sha256"),
    "no head_file": (lambda m: _edit_manifest(m, lambda d: d.pop("head_file")), "has no valid 'head_file'"),
    "no classes": (lambda m: _edit_manifest(m, lambda d: d.pop("classes")), "has no valid 'classes'"),
    "no fingerprint id": (lambda m: _edit_manifest(m, lambda d: d["fingerprint"].pop("id")), "has no fingerprint id"),
    "bad schema": (lambda m: _edit_manifest(m, lambda d: d.update(schema_version="one")), "invalid schema_version"),
    "manifest not json": (lambda m: (m / "manifest.json").write_text("{not json"), "cannot read"),
    "manifest a list": (lambda m: (m / "manifest.json").write_text("[1, 2]"), "is not an embedflow model manifest"),
    "manifest missing": (lambda m: (m / "manifest.json").unlink(), "is not an embedflow model folder (no manifest.json)"),
    "forged hash of a non-head": (
        lambda m: ((m / "head.joblib").write_bytes(b"this is not a pickle"),
                   _edit_manifest(m, lambda d: d["files"].update({"head.joblib": __import__("hashlib").sha256(
                       b"this is not a pickle").hexdigest()}))),
        "cannot load"),
}


@pytest.mark.parametrize("name", sorted(TAMPERING))
def test_damaged_model_folder_is_one_line_exit_5(trained, cli, name):
    model = trained / "models" / "tampered"
    shutil.copytree(trained / "models" / "logreg", model)
    damage, message = TAMPERING[name]
    damage(model)
    for args in (["evaluate", model, "cache/embeddings.h5"], ["predict", model, trained / "data"]):
        r = cli(*args, expect=5)
        assert r.stderr.startswith("error: ") and message in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    cli("evaluate", trained / "models" / "logreg", "cache/embeddings.h5", "--quiet")  # the original still loads


@pytest.mark.parametrize("damage,message", [
    ("truncate", "cannot read cache"),
    ("drop labels", "is damaged"),
    ("not a cache", "is not an embedflow cache"),
])
def test_damaged_cache_is_one_line_exit_4(trained, cli, damage, message):
    path = trained / "cache" / "embeddings.h5"
    if damage == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif damage == "drop labels":
        with h5py.File(path, "a") as f:
            del f["labels"]
    else:
        with h5py.File(path, "w") as f:
            f["x"] = [1, 2, 3]
    for args in (["info"], ["fit"], ["evaluate", "models/logreg", path]):
        r = cli(*args, expect=4)
        assert r.stderr.startswith("error: ") and message in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1


def test_evaluate_reports_skipped_files_and_strict_fails(trained, cli):
    test = make_dataset(trained / "test", per_class=3, seed=5)
    (test / "apples" / "broken.jpg").write_bytes(b"")
    r = cli("evaluate", "models/logreg", test, "--json", "--out", "ev")
    report = json.loads(r.stdout)
    assert report["skipped"] == [{"key": "apples/broken.jpg", "reason": "empty file (0 bytes)"}]
    assert "warning: skipped apples/broken.jpg: empty file (0 bytes)" in r.stderr
    assert "1 file(s) skipped, not part of this evaluation" in r.stderr
    assert sum(map(sum, report["confusion_matrix"])) == 9
    r = cli("evaluate", "models/logreg", test, "--strict", "--out", "ev", expect=7)
    assert "1 file(s) were skipped and --strict is set" in r.stderr
    cli("evaluate", "models/logreg", "cache/embeddings.h5", "--strict", "--quiet")  # nothing skipped: exit 0
