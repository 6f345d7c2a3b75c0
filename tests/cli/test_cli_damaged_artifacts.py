"""Trusted artifacts: a damaged or tampered model folder or cache is refused with one clear line and its
exit code (never a traceback, never unpickled); --strict on evaluate; exit codes as documented."""

from __future__ import annotations

import json
import os
import shutil

import h5py
import numpy as np
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


def _forge(m, data: bytes, name="head.joblib"):
    """Replace a member by other bytes and record their sha256, as an attacker who edits the manifest would."""
    import hashlib

    (m / name).write_bytes(data)
    _edit_manifest(m, lambda d: d["files"].update({name: hashlib.sha256(data).hexdigest()}))


def _pickle_of(obj) -> bytes:
    import io

    import joblib

    buf = io.BytesIO()
    joblib.dump(obj, buf)
    return buf.getvalue()


def _npz(**arrays) -> bytes:
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _swap_for_link(m, name):
    """name becomes a symbolic link to an identical copy outside the folder (the sha256 still matches)."""
    outside = m.parent.parent / f"outside-{name}"
    shutil.copy(m / name, outside)
    (m / name).unlink()
    (m / name).symlink_to(outside)


def _swap_for_fifo(m, name):
    import os

    (m / name).unlink()
    os.mkfifo(m / name)


UNSIGNED = "was not written by this installation; pass --trust"
# name: (damage, the line without --trust, the line with --trust (None: then it loads, exit 0)).
# Any edit of the manifest breaks its signature: a field that validation rejects is named first (with or
# without --trust); an edit that validates is refused as foreign unless --trust, which then meets the check
# of the member's bytes or of the loaded object.
TAMPERING = {
    "head modified": (lambda m: (m / "head.joblib").open("ab").write(b"\x00"), "does not match the sha256 in its manifest",
                      "does not match the sha256 in its manifest"),
    "head missing": (lambda m: (m / "head.joblib").unlink(), "is incomplete: head.joblib is missing", "is missing"),
    "head a symlink": (lambda m: _swap_for_link(m, "head.joblib"), "head.joblib is a symbolic link", "is a symbolic link"),
    "head a fifo": (lambda m: _swap_for_fifo(m, "head.joblib"), "head.joblib is not a regular file", "not a regular file"),
    "manifest a symlink": (lambda m: _swap_for_link(m, "manifest.json"), "manifest.json is a symbolic link",
                           "is a symbolic link"),
    "manifest a folder": (lambda m: ((m / "manifest.json").unlink(), (m / "manifest.json").mkdir()),
                          "manifest.json is not a regular file", "not a regular file"),
    "head outside the folder": (lambda m: _edit_manifest(m, lambda d: d.update(head_file="../../cache/embeddings.h5")),
                                "which is not a file of the folder", "which is not a file of the folder"),
    "no recorded hash": (lambda m: _edit_manifest(m, lambda d: d.update(files={})), "records no sha256 for head.joblib",
                         "records no sha256 for head.joblib"),
    "files not a table": (lambda m: _edit_manifest(m, lambda d: d.update(files="x")), "has no valid 'files'",
                          "has no valid 'files'"),
    "hash not hex": (lambda m: _edit_manifest(m, lambda d: d["files"].update({"head.joblib": "zz"})),
                     "has no valid 'files.head.joblib'", "has no valid 'files.head.joblib'"),
    "no head_file": (lambda m: _edit_manifest(m, lambda d: d.pop("head_file")), "has no valid 'head_file'",
                     "has no valid 'head_file'"),
    "head_file a number": (lambda m: _edit_manifest(m, lambda d: d.update(head_file=3)), "has no valid 'head_file'",
                           "has no valid 'head_file'"),
    "no classes": (lambda m: _edit_manifest(m, lambda d: d.pop("classes")), "has no valid 'classes'", "'classes'"),
    "classes not names": (lambda m: _edit_manifest(m, lambda d: d.update(classes=[1, 2, 3])), "has no valid 'classes'",
                          "has no valid 'classes'"),
    "class named twice": (lambda m: _edit_manifest(m, lambda d: d.update(classes=["a", "a", "b"])),
                          "has no valid 'classes' (a class is named twice)", "a class is named twice"),
    "fingerprint a list": (lambda m: _edit_manifest(m, lambda d: d.update(fingerprint=[1])), "has no valid 'fingerprint'",
                           "has no valid 'fingerprint'"),
    "no fingerprint id": (lambda m: _edit_manifest(m, lambda d: d["fingerprint"].pop("id")),
                          "has no valid 'fingerprint.id'", "has no valid 'fingerprint.id'"),
    "image size a string": (lambda m: _edit_manifest(m, lambda d: d["fingerprint"].update(image_size="96")),
                            "has no valid 'fingerprint.image_size'", "'fingerprint.image_size'"),
    "image size huge": (lambda m: _edit_manifest(m, lambda d: d["fingerprint"].update(image_size=10**9)),
                        "has no valid 'fingerprint.image_size'", "'fingerprint.image_size'"),
    "unknown kind": (lambda m: _edit_manifest(m, lambda d: d.update(kind="quantum")), "unknown kind 'quantum'",
                     "unknown kind 'quantum'"),
    "kind a number": (lambda m: _edit_manifest(m, lambda d: d.update(kind=7)), "has no valid 'kind'", "'kind'"),
    "unknown head": (lambda m: _edit_manifest(m, lambda d: d.update(head="xgboost")), "has no valid 'head'", "'head'"),
    "split keys not strings": (lambda m: _edit_manifest(m, lambda d: d["split"].update(val_keys=[1])),
                               "has no valid 'split.val_keys'", "'split.val_keys'"),
    "bad schema": (lambda m: _edit_manifest(m, lambda d: d.update(schema_version="one")), "invalid schema_version",
                   "invalid schema_version"),
    "manifest not json": (lambda m: (m / "manifest.json").write_text("{not json"), "cannot read", "cannot read"),
    "manifest a list": (lambda m: (m / "manifest.json").write_text("[1, 2]"), "is not an embedflow model manifest",
                        "is not an embedflow model manifest"),
    "manifest missing": (lambda m: (m / "manifest.json").unlink(), "is not an embedflow model folder (no manifest.json)",
                         "(no manifest.json)"),
    "forged hash of a non-pickle": (lambda m: _forge(m, b"this is not a pickle"), UNSIGNED, "cannot load"),
    "forged hash of a pickle that is not a head": (lambda m: _forge(m, _pickle_of({"not": "a head"})), UNSIGNED,
                                                   "holds a dict, not a fitted head"),
    "forged hash of a head of other classes": (
        lambda m: _edit_manifest(m, lambda d: d.update(classes=["apples", "limes"])), UNSIGNED, "not this folder's head"),
    "output_dim a string": (lambda m: _edit_manifest(m, lambda d: d["fingerprint"].update(output_dim="1280")),
                            "has no valid 'fingerprint.output_dim'", "has no valid 'fingerprint.output_dim'"),
    "alpha a string": (lambda m: _edit_manifest(m, lambda d: d["fingerprint"].update(alpha="1.0")),
                       "has no valid 'fingerprint.alpha'", "has no valid 'fingerprint.alpha'"),
    "backbone a number": (lambda m: _edit_manifest(m, lambda d: d["fingerprint"].update(backbone=5)),
                          "has no valid 'fingerprint.backbone'", "has no valid 'fingerprint.backbone'"),
    "rejector a number": (lambda m: _edit_manifest(m, lambda d: d.update(rejector=5)), "has no valid 'rejector'",
                          "has no valid 'rejector'"),
    "rejector method unknown": (lambda m: _edit_manifest(m, lambda d: d["rejector"].update(method="magic")),
                                "has no valid 'rejector.method'", "has no valid 'rejector.method'"),
    "rejector threshold a string": (lambda m: _edit_manifest(m, lambda d: d["rejector"].update(threshold="0.2")),
                                    "has no valid 'rejector.threshold'", "has no valid 'rejector.threshold'"),
    "rejector file outside": (lambda m: _edit_manifest(m, lambda d: d["rejector"].update(file="../x.npz")),
                              "has no valid 'rejector.file'", "has no valid 'rejector.file'"),
    "rejector.npz garbage": (lambda m: _forge(m, b"garbage", "rejector.npz"), UNSIGNED,
                             "cannot read the unknown-input rule"),
    "rejector.npz an object array": (lambda m: _forge(m, _npz(reference=np.array([{"x": 1}], dtype=object)),
                                                      "rejector.npz"), UNSIGNED, "cannot read the unknown-input rule"),
    "rejector.npz without its arrays": (lambda m: _forge(m, _npz(other=np.zeros((2, 1280), np.float32)), "rejector.npz"),
                                       UNSIGNED, "rejector arrays missing: reference"),
    "rejector.npz of other width": (lambda m: _forge(m, _npz(reference=np.zeros((2, 7), np.float32)), "rejector.npz"),
                                    UNSIGNED, "cannot read the unknown-input rule"),
    "signature removed": (lambda m: _edit_manifest(m, lambda d: d.pop("signature")), UNSIGNED, None),
    "signed with another key": (lambda m: _edit_manifest(m, lambda d: d.update(signature="hmac-sha256:" + "0" * 64)),
                                UNSIGNED, None),
}


@pytest.mark.parametrize("name", sorted(TAMPERING))
def test_damaged_model_folder_is_one_line_exit_5(trained, cli, name):
    """Without --trust every damaged, tampered or foreign folder is refused before anything is unpickled;
    with --trust the damage itself is still named (only a foreign but intact folder then loads)."""
    model = trained / "models" / "tampered"
    shutil.copytree(trained / "models" / "logreg", model)
    damage, message, trusted_message = TAMPERING[name]
    damage(model)
    for trust, expected in (([], message), (["--trust"], trusted_message)):
        for args in (["evaluate", model, "cache/embeddings.h5", "--out", "ev"], ["predict", model, trained / "data"]):
            r = cli(*args, *trust, expect=0 if expected is None else 5)
            if expected is not None:
                assert r.stderr.startswith("error: ") and expected in r.stderr, (trust, r.stderr)
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


def test_every_command_that_loads_a_model_refuses_a_foreign_folder(trained, cli, tmp_path, monkeypatch):
    """A model folder written with another installation's key (here: another key file) is never unpickled
    without --trust, by any command that loads a model; with --trust it loads."""
    mine = os.environ["EMBEDFLOW_SIGNING_KEY"]
    monkeypatch.setenv("EMBEDFLOW_SIGNING_KEY", str(tmp_path / "someone-else.key"))
    cli("fit", "--out", "models/foreign", "--quiet")
    monkeypatch.setenv("EMBEDFLOW_SIGNING_KEY", mine)
    image = next((trained / "data" / "apples").iterdir())
    for args in (["evaluate", "models/foreign", "cache/embeddings.h5"], ["predict", "models/foreign", image],
                 ["export", "models/foreign", "--out", "models/exported"],
                 ["explain", "models/foreign", image, "--out", "cam"]):
        r = cli(*args, expect=5)
        assert r.stderr == ("error: model folder models/foreign was not written by this installation; pass --trust "
                            "(trust=True in Python) if you trust its source\n"), r.stderr
    assert not (trained / "models" / "exported").exists() and not (trained / "cam").exists()
    cli("predict", "models/foreign", image, "--trust")
