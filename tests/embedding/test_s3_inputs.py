"""Images on object storage, against a real S3 API: moto's standalone server on 127.0.0.1 (the s3_server
fixture), read through s3fs exactly as a bucket on AWS would be. Offline, loopback only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from embedflow import cache
from embedflow.data import bytes_read

from ..conftest import CLASS_COLOURS, S3_SECRET, SIZE, make_dataset, make_image

BUCKET = "photos"


def s3fs_now():
    import s3fs

    return s3fs.S3FileSystem(skip_instance_cache=True)


def upload(fs, folder: Path, prefix: str) -> None:
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            fs.pipe_file(f"{prefix}/{f.relative_to(folder).as_posix()}", f.read_bytes())


@pytest.fixture
def bucket(s3_server, tmp_path):
    """A bucket holding a class-per-folder dataset under data/ (3 classes x 4 images), and the same files on
    local disk: (local folder, s3fs filesystem, "photos/data")."""
    fs = s3fs_now()
    if not fs.exists(BUCKET):
        fs.mkdir(BUCKET)
    prefix = f"{BUCKET}/{tmp_path.name}"
    data = make_dataset(tmp_path / "data", per_class=4)
    upload(fs, data, prefix)
    return data, fs, prefix


def assert_same_cache(a, b):
    assert a.keys == b.keys and a.hashes == b.hashes and a.classes == b.classes
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_allclose(a.embeddings, b.embeddings, rtol=1e-6, atol=1e-7)


def test_an_s3_prefix_embeds_like_the_same_files_on_disk_and_reruns_incrementally(cli, bucket, tmp_path):
    data, fs, prefix = bucket
    url = f"s3://{prefix}/"
    local = json.loads(cli("embed", data, "--cache", "local.h5", "--json").stdout)
    before = bytes_read()
    first = cli("embed", url, "--cache", "s3.h5", "--json")
    remote = json.loads(first.stdout)
    assert remote["embedded"] == local["embedded"] == 12 and remote["failed"] == []
    assert bytes_read() - before == sum(f.stat().st_size for f in data.rglob("*") if f.is_file())  # each object once
    s3, disk = cache.load(tmp_path / "s3.h5"), cache.load(tmp_path / "local.h5")
    assert_same_cache(s3, disk)
    assert s3.root == f"s3://{prefix}" and s3.keys[0] == "apples/apples_000.jpg"  # keys relative to the prefix

    # unchanged objects: nothing read, nothing embedded (their ETag + size are those recorded)
    before = bytes_read()
    again = json.loads(cli("embed", url, "--cache", "s3.h5", "--json").stdout)
    assert (again["embedded"], again["kept"], again["removed"]) == (0, 12, 0)
    assert bytes_read() == before

    # one changed, one added, one removed, one corrupt: each is noticed
    changed = make_image(tmp_path / "changed.jpg", CLASS_COLOURS["limes"], 777)
    fs.pipe_file(f"{prefix}/limes/limes_000.jpg", changed.read_bytes())
    fs.pipe_file(f"{prefix}/plums/new.png", make_image(tmp_path / "new.png", CLASS_COLOURS["plums"], 778).read_bytes())
    fs.rm_file(f"{prefix}/apples/apples_001.png")
    fs.pipe_file(f"{prefix}/apples/broken.jpg", b"\xff\xd8\xff not really a jpeg")
    third = cli("embed", url, "--cache", "s3.h5", "--json")
    out = json.loads(third.stdout)
    assert (out["embedded"], out["kept"], out["removed"]) == (2, 10, 1), (out["failed"], out["reused"], out["total"])
    assert out["failed"] == [["apples/broken.jpg", out["failed"][0][1]]]
    assert out["failed"][0][1].startswith(("corrupt image", "truncated image", "not an image"))
    assert "skipped apples/broken.jpg: " in third.stderr
    s3 = cache.load(tmp_path / "s3.h5")
    assert "apples/apples_001.png" not in s3.keys and "plums/new.png" in s3.keys
    from embedflow.data import read_image

    new_hash, _ = read_image(changed, SIZE)
    assert s3.hashes[s3.keys.index("limes/limes_000.jpg")] == new_hash  # the hash of the bytes read

    # and then nothing again: the bad object is read (its hash matches the remembered failure), never decoded
    last = json.loads(cli("embed", url, "--cache", "s3.h5", "--json").stdout)
    assert (last["embedded"], last["kept"], len(last["failed"])) == (0, 12, 1)

    # the secret key of the environment is in no output and nowhere in the cache file
    for result in (first, third):
        assert S3_SECRET not in result.stdout + result.stderr
    assert S3_SECRET.encode() not in (tmp_path / "s3.h5").read_bytes()


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "embedflow.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300)


def test_a_missing_bucket_or_missing_credentials_is_one_line_and_exit_2(s3_server, tmp_path):
    missing = run_cli("embed", "s3://no-such-bucket-here/data/", "--cache", tmp_path / "c.h5")
    assert missing.returncode == 2, missing.stderr
    assert missing.stderr.strip().splitlines() == ["error: not found: s3://no-such-bucket-here/data "
                                                   "(no such bucket or prefix)"]
    env = {k: v for k, v in os.environ.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    anonymous = run_cli("embed", f"s3://{BUCKET}/data/", "--cache", tmp_path / "c.h5", env=env)
    assert anonymous.returncode == 2, anonymous.stderr
    lines = anonymous.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot list s3://{BUCKET}/data: NoCredentialsError"), lines
    assert S3_SECRET not in missing.stderr + missing.stdout
    assert not (tmp_path / "c.h5").exists()


def test_a_protocol_whose_package_is_not_installed_names_it(cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "gcsfs", None)  # an import of gcsfs now fails, as when it is not installed
    out = cli("embed", "gs://bucket/data/", expect=2)
    assert out.stderr.strip().splitlines() == ["error: gs:// needs a package that is not installed: pip install gcsfs"]
    out = cli("embed", "s3://user:hunter2@bucket/data/", expect=2)
    assert "hunter2" not in out.stderr and "refused" in out.stderr


def test_predict_reads_objects_by_url(cli, bucket, tmp_path):
    from embedflow import api

    data, fs, prefix = bucket
    cli("embed", f"s3://{prefix}/", "--cache", "s3.h5")
    model = api.fit_head(tmp_path / "s3.h5", "logreg")
    model.save(tmp_path / "models" / "logreg")
    out = cli("predict", tmp_path / "models" / "logreg", f"s3://{prefix}/plums/", f"s3://{prefix}/apples/apples_000.jpg",
              "--cache", "s3.h5", "--format", "jsonl")
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["path"] for r in rows] == [f"s3://{prefix}/plums/plums_{i:03d}{e}" for i, e in
                                         enumerate([".jpg", ".png", ".JPEG", ".jpg"])] + [f"s3://{prefix}/apples/apples_000.jpg"]
    assert [r["top"][0]["label"] for r in rows] == ["plums"] * 4 + ["apples"]
    manifest = b"".join(f.read_bytes() for f in (tmp_path / "models").rglob("*") if f.is_file())
    assert S3_SECRET.encode() not in manifest


@pytest.mark.slow  # starts a local Ray cluster
def test_the_ray_engine_reads_the_objects_on_its_workers(cli, bucket, tmp_path, embedflow_home):
    ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'embedflow[ray]'")
    data, fs, prefix = bucket
    cli("embed", data, "--cache", "local.h5")
    # the cluster starts after the S3 server: its workers get its endpoint (and, here, the fake credentials)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        before = bytes_read()
        out = json.loads(cli("embed", f"s3://{prefix}/", "--cache", "ray.h5", "--engine", "ray", "--workers", "2",
                             "--json").stdout)
        assert out["runtime"].startswith("ray") and out["embedded"] == 12
        assert bytes_read() == before  # the driver listed the objects and read none of them: the workers did
        assert_same_cache(cache.load(tmp_path / "ray.h5"), cache.load(tmp_path / "local.h5"))
        fs.pipe_file(f"{prefix}/plums/late.jpg", make_image(tmp_path / "late.jpg", CLASS_COLOURS["plums"], 4242).read_bytes())
        again = json.loads(cli("embed", f"s3://{prefix}/", "--cache", "ray.h5", "--engine", "ray", "--json").stdout)
        assert (again["embedded"], again["kept"]) == (1, 12) and bytes_read() == before
    finally:
        ray.shutdown()
