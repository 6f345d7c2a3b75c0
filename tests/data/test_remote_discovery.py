"""Discovery of an object-store prefix follows the rules of a local folder (fsspec's memory:// filesystem:
a real fsspec filesystem, in this process)."""

from __future__ import annotations

import uuid

import fsspec
import pytest

from embedflow.data import RemotePath, discover, discover_inputs, key_path, read_bytes
from embedflow.errors import DatasetError, UsageError


@pytest.fixture
def store():
    """(memory filesystem, a fresh prefix "/bucket-<id>")."""
    fs = fsspec.filesystem("memory")
    prefix = f"/bucket-{uuid.uuid4().hex[:8]}"
    yield fs, prefix
    fs.rm(prefix, recursive=True)


def put(fs, prefix, *names):
    for name in names:
        fs.pipe_file(f"{prefix}/{name}", name.encode())


def test_class_folders_with_the_local_rules(store, tmp_path):
    fs, prefix = store
    names = ["a/1.jpg", "a/deep/2.png", "b/3.JPEG", "loose.jpg", "b/readme.txt", "b/.hidden.jpg", ".git/x.jpg",
             "a/.cache/4.jpg", "c/raw.psd"]
    put(fs, prefix, *names)
    for name in names:  # the same tree on disk
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(name.encode())
    remote, local = discover(f"memory://{prefix}/"), discover(tmp_path)
    assert [r.key for r in remote.refs] == [r.key for r in local.refs] == ["a/1.jpg", "a/deep/2.png", "b/3.JPEG"]
    assert remote.classes == local.classes == ["a", "b"]
    assert [(d.key, d.kind) for d in remote.dropped] == [(d.key, d.kind) for d in local.dropped]
    assert remote.notes == [n.replace(str(tmp_path), f"memory://{prefix}") for n in local.notes]
    assert remote.refs[0].path == RemotePath(f"memory://{prefix}/a/1.jpg", remote.refs[0].path.stat)
    assert read_bytes(remote.refs[0].path) == b"a/1.jpg"


def test_object_keys_that_name_no_path_inside_the_prefix_are_left_out(store):
    fs, prefix = store
    put(fs, prefix, "a/1.jpg", "a/../b/2.jpg", "a/./3.jpg")
    found = discover(f"memory://{prefix}")
    assert [r.key for r in found.refs] == ["a/1.jpg"]
    assert sorted(d.key for d in found.dropped) == ["a/../b/2.jpg", "a/./3.jpg"]


def test_splits_and_unlabelled_layouts(store):
    fs, prefix = store
    put(fs, prefix, "s/train/x/1.jpg", "s/val/x/2.jpg", "s/test/y/3.jpg", "u/1.jpg", "u/2.png")
    found = discover(f"memory://{prefix}/s")
    assert found.layout == "splits" and found.split_of == {"train/x/1.jpg": "train", "val/x/2.jpg": "val",
                                                           "test/y/3.jpg": "test"}
    found = discover(f"memory://{prefix}/u")
    assert found.layout == "unlabelled" and [r.key for r in found.refs] == ["1.jpg", "2.png"]


def test_the_change_detector_moves_when_an_object_is_rewritten(store):
    fs, prefix = store
    put(fs, prefix, "a/1.jpg", "a/2.jpg")
    before = {r.key: r.path.stat for r in discover(f"memory://{prefix}").refs}
    fs.pipe_file(f"{prefix}/a/1.jpg", b"other bytes")
    after = {r.key: r.path.stat for r in discover(f"memory://{prefix}").refs}
    assert after["a/2.jpg"] == before["a/2.jpg"] and after["a/1.jpg"] != before["a/1.jpg"]
    assert after["a/1.jpg"][0] == len(b"other bytes") and after["a/1.jpg"][3] == -1


def test_missing_prefix_unknown_protocol_and_loose_inputs(store):
    fs, prefix = store
    with pytest.raises(DatasetError, match=r"^not found: memory://nothing-here \(no such bucket or prefix\)$"):
        discover("memory://nothing-here/")
    with pytest.raises(UsageError, match="unknown protocol nosuchproto://"):
        discover("nosuchproto://x/y")
    put(fs, prefix, "q/1.jpg", "q/2.txt", "q/sub/3.png")
    refs = discover_inputs([f"memory://{prefix}/q/", f"memory://{prefix}/q/2.txt"])
    assert [r.key for r in refs] == [f"memory://{prefix}/q/1.jpg", f"memory://{prefix}/q/sub/3.png",
                                     f"memory://{prefix}/q/2.txt"]
    with pytest.raises(UsageError, match="no such object or prefix"):
        discover_inputs([f"memory://{prefix}/nope.jpg"])


def test_file_urls_are_local_paths_and_keys_of_url_roots_are_objects(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "1.jpg").write_bytes(b"x")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "2.jpg").write_bytes(b"y")
    found = discover(f"file://{tmp_path}/")
    assert [type(r.path).__name__ for r in found.refs] == ["PosixPath", "PosixPath"]
    assert key_path("s3://bucket/pre", "a/1.jpg") == RemotePath("s3://bucket/pre/a/1.jpg")
