"""Keys that leave the dataset folder (`../x.png`, absolute paths) are never used to read an image: the
cache refuses them when opened, and every reader of images by key refuses them again, with a reason."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from embedflow import cache
from embedflow.cli import app
from embedflow.data import BadImage, key_path
from embedflow.embedding import decode_refs, refs_for_keys
from embedflow.reports import sheets

SECRET = (1, 254, 3)  # a colour nothing else on a sheet has
BAD_KEYS = ["../secret.png", "a/../../secret.png", "/abs/secret.png", "C:\\secret.png", "\\\\host\\share\\x.png",
            "a/..\\..\\secret.png"]


@pytest.fixture
def secret(tmp_path):
    path = tmp_path / "secret.png"
    Image.new("RGB", (32, 32), SECRET).save(path)
    return path


@pytest.mark.parametrize("key", BAD_KEYS)
def test_key_path_refuses_keys_that_leave_the_root(tmp_path, key):
    with pytest.raises(BadImage, match="a cache key must be a path inside its dataset folder"):
        key_path(tmp_path / "data", key)


def test_key_path_keeps_ordinary_keys(tmp_path):
    assert key_path(tmp_path, "roses/a..b.jpg") == tmp_path / "roses" / "a..b.jpg"


def test_decoding_by_key_skips_a_key_outside_with_its_reason(tmp_path, secret):
    root = tmp_path / "data"
    Image.new("RGB", (20, 20), (10, 20, 30)).save((root / "a").mkdir(parents=True) or root / "a" / "ok.png")
    refs = refs_for_keys(root, ["a/ok.png", "../secret.png", str(secret)], ["a", "a", "a"])
    decoded = decode_refs(refs, 32, ["a"])
    assert [r.key for r in decoded.refs] == ["a/ok.png"]
    assert [(r.key, "leaves the dataset folder" in why or "absolute path" in why) for r, why in decoded.failed] == \
        [("../secret.png", True), (str(secret), True)]


def test_contact_sheet_does_not_show_a_file_outside_the_dataset(tmp_path, secret):
    """Even from a search result that names such keys (bypassing the cache's own check), the sheet shows the
    reason in a grey cell and never the file."""
    root = tmp_path / "data"
    (root / "a").mkdir(parents=True)
    Image.new("RGB", (20, 20), (10, 20, 30)).save(root / "a" / "q.png")
    hits = [SimpleNamespace(key=k, label="a", score=0.9) for k in ("../secret.png", str(secret))]
    result = SimpleNamespace(results=[SimpleNamespace(kind="key", query="a/q.png", own_key="a/q.png", neighbors=hits),
                                      SimpleNamespace(kind="key", query="../secret.png", own_key=None, neighbors=[])],
                             cache="c.h5", method="exact", k=2)
    columns = cache.CacheColumns(keys=["a/q.png"], hashes=["0" * 64], labels=np.array([0]), classes=["a"],
                                 fingerprint={}, root=str(root), dim=3, updated_utc="", path="c.h5")
    out = sheets.neighbors_sheet(result, columns, tmp_path / "sheet.png")
    pixels = np.asarray(Image.open(out).convert("RGB")).reshape(-1, 3)
    assert not (pixels == SECRET).all(axis=1).any()
    assert ((pixels == (10, 20, 30)).all(axis=1)).any()  # the query inside the root is shown


def test_a_crafted_cache_with_such_keys_is_refused_when_opened(tmp_path, secret):
    n, dim = 4, 8
    X = np.random.default_rng(0).normal(size=(n, dim)).astype(np.float32)
    src = tmp_path / "v.npz"
    hashes = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(n)]
    np.savez(src, hashes=np.array(hashes, dtype="S64"), vectors=X)
    root = tmp_path / "data"
    keys = ["a/x0.png", "a/x1.png", "../secret.png", str(secret)]
    rows = [cache.Row(keys[i], hashes[i], i % 2, src, i) for i in range(n)]
    cache.write(tmp_path / "c.h5", rows, ["a", "b"], {"backbone": "synthetic", "id": "00000000000000aa"}, str(root),
                [], dim)
    for args in (["neighbors", "--key", "a/x0.png", "--sheet", "s.png"], ["audit", "--out", "audit"], ["info"]):
        r = CliRunner().invoke(app, [*args, "--cache", str(tmp_path / "c.h5")], catch_exceptions=False)
        assert r.exit_code == 4, (args, r.stderr)
        assert len(r.stderr.splitlines()) == 1, r.stderr
        if args == ["info"]:  # info lists every problem with its keys (stdout), then the one error line
            assert "keys whose path leaves the dataset root" in r.stderr
            assert "2 rows, e.g. ../secret.png, " + str(secret) in r.stdout, r.stdout
        else:
            assert "key '../secret.png' leaves the dataset root" in r.stderr


def _named_in_nfd(root):
    """A dataset whose class folder and one file are named in NFD (as macOS writes names) and one file whose
    name is not UTF-8: (keys as the cache stores them, the files on disk)."""
    import os
    import unicodedata

    nfd = lambda s: unicodedata.normalize("NFD", s)  # noqa: E731
    files = [root / nfd("Café") / "q.png", root / "b" / nfd("Ångström.png")]
    for i, f in enumerate(files):
        f.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (20, 20), (10, 20 + i, 30)).save(f)
    raw = os.fsencode(root / "b") + b"/caf\xe9.png"
    Image.new("RGB", (20, 20), (10, 22, 30)).save(raw.decode(errors="surrogateescape"), format="PNG")
    files.append(Path(os.fsdecode(raw)))
    return ["Café/q.png", "b/Ångström.png", "b/caf\\xe9.png"], files


def test_every_reader_by_key_finds_files_named_in_nfd_or_not_utf8(tmp_path):
    """Keys are NFC with non-UTF-8 bytes escaped; the files keep their names. key_path, and every reader that
    goes through it (contact sheets, the report page's thumbnails, export's and evaluate's refs), finds the
    file as it is named on disk; the parts of a key that name nothing stay as in the key (the caller says the file is missing)."""
    from embedflow.reports import page

    root = tmp_path / "data"
    keys, files = _named_in_nfd(root)
    for key, f in zip(keys, files):
        assert key_path(root, key) == f and f.exists()
        assert sheets.source(str(root), key) == f
        assert page.image_path(str(root), key) == f
        assert page.thumbnail_uri(page.image_path(str(root), key)) is not None
    assert [r.path for r in refs_for_keys(root, keys, ["a"] * 3)] == files
    assert key_path(root, "Café/gone.png") == files[0].parent / "gone.png"  # the folder as named, the file missing
    assert key_path(root, "nowhere/x.png") == root / "nowhere" / "x.png"


def test_neighbors_by_an_nfd_key_with_a_sheet_of_nfd_named_files(cli, tmp_path):
    """`neighbors --key` accepts a key pasted in NFD (it is compared in NFC, as stored) and its contact sheet
    shows the pictures of a class folder named in NFD, not "no image" cells."""
    import unicodedata

    from ..conftest import make_dataset, make_image

    data = make_dataset(tmp_path / "data", per_class=3)
    folder = data / unicodedata.normalize("NFD", "Café")
    for i in range(3):
        make_image(folder / f"c{i}.png", (250, 5, 250), 500 + i, fmt="PNG")
    cli("embed", data)
    nfd_key = unicodedata.normalize("NFD", "Café/c0.png")
    r = cli("neighbors", "--key", nfd_key, "-k", "2", "--sheet", tmp_path / "sheet.png", "--json")
    import json

    found = [n["key"] for n in json.loads(r.stdout)["results"][0]["neighbors"]]
    assert set(found) == {"Café/c1.png", "Café/c2.png"}, found
    pixels = np.asarray(Image.open(tmp_path / "sheet.png").convert("RGB")).reshape(-1, 3).astype(int)
    magenta = (np.abs(pixels - (250, 5, 250)) < 60).all(axis=1)
    assert magenta.sum() > 3 * 400, "the NFD-named pictures are not on the sheet"
