"""Fingerprint ids hash values, not prose; artifacts written with the earlier (scheme 1) ids keep loading."""

from __future__ import annotations

import hashlib
import importlib
import json
from dataclasses import replace

import h5py
import pytest

import numpy as np

from embedflow import backbones, cache
from embedflow.errors import FingerprintMismatch

from ..conftest import make_dataset, make_image

# What embedflow 0.1.0 wrote for the default backbone with Keras' ImageNet weights (scheme 1: the id
# hashed these fields, prose included). Frozen: the id below is the one on users' caches and models.
SCHEME1_DEFAULT = {
    "backbone": "mobilenet_v2", "alpha": 1.0, "image_size": 224, "output_dim": 1280,
    "preprocessing": "mobilenet_v2: x/127.5 - 1 (pixels to [-1, 1])", "pooling": "global average",
    "resize": "EXIF-rotated, RGB over white, bilinear to a square (no crop)",
    "weights_sha256": "ae4e50beb0eca359853b053c48fbcf2401902451edfa03c0561853ed0d64228d",
    "weights_source": "imagenet", "backbone_arg": "mobilenet_v2", "embedding_version": 1,
    "embedflow_version": "0.1.0", "id": "849f98c146202f66",
}
SCHEME1_FIELDS = ("backbone", "alpha", "image_size", "output_dim", "preprocessing", "pooling", "resize",
                  "weights_sha256", "embedding_version")


def scheme1(fp: dict) -> dict:
    """A frozen copy of the scheme 1 writer: the record embedflow 0.1.0 made for the same backbone."""
    old = {k: v for k, v in fp.items() if k not in ("pixels", "pooling_code", "resize_code", "id_scheme", "id")}
    old["preprocessing"] = {"mobilenet_v2": "mobilenet_v2: x/127.5 - 1 (pixels to [-1, 1])"}[fp["pixels"]]
    old["pooling"] = "global average"
    old["resize"] = "EXIF-rotated, RGB over white, bilinear to a square (no crop)"
    return signed(old)


def signed(old: dict) -> dict:
    ident = json.dumps({k: old[k] for k in SCHEME1_FIELDS}, sort_keys=True)
    return {**old, "id": hashlib.sha256(ident.encode()).hexdigest()[:16]}


def test_the_frozen_scheme1_writer_reproduces_a_real_scheme1_id():
    assert scheme1({**SCHEME1_DEFAULT, "pixels": "mobilenet_v2"})["id"] == SCHEME1_DEFAULT["id"]


def test_the_id_hashes_values_and_ignores_the_prose(tiny_spec):
    fp = backbones.fingerprint(tiny_spec)
    assert fp["id_scheme"] == 2 and fp["pixels"] == "mobilenet_v2" and fp["pooling_code"] == "avg"
    reworded = backbones.fingerprint(replace(tiny_spec, preprocessing="pixels scaled to [-1, 1]"))
    assert reworded["id"] == fp["id"] and reworded["preprocessing"] != fp["preprocessing"]
    assert backbones.fingerprint_id({**fp, "resize": "other words"}) == fp["id"]
    assert backbones.fingerprint_id({**fp, "pixels": "raw"}) != fp["id"]
    assert backbones.fingerprint_id({**fp, "image_size": 128}) != fp["id"]
    assert backbones.fingerprint(replace(tiny_spec, image_size=128))["id"] != fp["id"]


def test_a_scheme1_default_fingerprint_matches_todays_default(monkeypatch):
    fingerprints = importlib.import_module("embedflow.backbones.fingerprint")  # the module, not the function
    monkeypatch.setattr(fingerprints, "weights_digest", lambda spec, path=None: SCHEME1_DEFAULT["weights_sha256"])
    now = backbones.fingerprint(backbones.get_spec("mobilenet_v2"))
    assert now["id"] != SCHEME1_DEFAULT["id"]  # a new id scheme ...
    assert backbones.same_backbone(SCHEME1_DEFAULT, now)  # ... that still recognises the old one
    assert backbones.upgrade(SCHEME1_DEFAULT)["id"] == now["id"]
    assert backbones.upgrade(SCHEME1_DEFAULT)["scheme1_id"] == SCHEME1_DEFAULT["id"]
    assert backbones.same_backbone(now["id"], SCHEME1_DEFAULT)  # an id string, against an old record
    assert backbones.same_backbone(SCHEME1_DEFAULT["id"], backbones.upgrade(SCHEME1_DEFAULT))
    backbones.check_compatible(SCHEME1_DEFAULT, now, "cache c.h5")
    other_weights = scheme1({**now, "weights_sha256": "0" * 64})
    with pytest.raises(FingerprintMismatch, match="weights_sha256"):
        backbones.check_compatible(other_weights, now, "cache c.h5")
    forged = {**SCHEME1_DEFAULT, "image_size": 160}  # fields edited, id left: not recognised as scheme 1
    assert backbones.upgrade(forged) is forged and not backbones.same_backbone(forged, now)
    unknown = signed({**scheme1(now), "preprocessing": "a prose embedflow never wrote"})
    assert backbones.upgrade(unknown) is unknown and not backbones.same_backbone(unknown, now)


def as_schema_1_file(f) -> None:
    """An old fingerprint comes in an old file: cache schema 1 (no content checksum, no vector CRCs)."""
    f.attrs["schema_version"] = 1
    del f.attrs["content_sha256"]
    del f["vector_crc32"]


def rewrite_as_scheme1(cache_path) -> dict:
    with h5py.File(cache_path, "r+") as f:
        old = scheme1(json.loads(f.attrs["fingerprint"]))
        f.attrs["fingerprint"], f.attrs["fingerprint_id"] = json.dumps(old), old["id"]
        as_schema_1_file(f)
    return old


def test_a_cache_and_a_model_with_scheme1_fingerprints_keep_working(cli, tmp_path):
    data = make_dataset(tmp_path / "data", per_class=6)
    cli("embed", data, "--quiet")
    old = rewrite_as_scheme1("cache/embeddings.h5")
    assert json.loads(cli("info", "--json").stdout)["fingerprint"]["id"] == old["id"]
    out = json.loads(cli("embed", data, "--json").stdout)  # today's code accepts the cache as its own
    assert (out["kept"], out["embedded"]) == (18, 0)
    cli("fit", "--head", "logreg", "--val-split", "0", "--quiet")
    manifest = json.loads((tmp_path / "models" / "logreg" / "manifest.json").read_text())
    assert manifest["fingerprint"]["id"] == old["id"]  # the model records the scheme 1 fingerprint
    new_photo = make_image(tmp_path / "new" / "lime.jpg", (60, 190, 60), 999)  # not in the cache: embedded
    predicted = json.loads(cli("predict", "models/logreg", new_photo, "--json").stdout)
    assert predicted["predictions"][0]["top"][0]["label"] == "limes"
    found = json.loads(cli("neighbors", new_photo, "--k", "3", "--json").stdout)
    assert found["results"][0]["neighbors"][0]["label"] == "limes"
    make_image(data / "limes" / "limes_new.png", (60, 190, 60), 4242)  # a rerun that adds: written as scheme 2
    out = json.loads(cli("embed", data, "--json").stdout)
    assert (out["kept"], out["embedded"]) == (18, 1)
    now = json.loads(cli("info", "--json").stdout)["fingerprint"]
    assert now["id_scheme"] == 2 and backbones.same_backbone(old, now)
    predicted = json.loads(cli("predict", "models/logreg", new_photo, "--json").stdout)  # scheme 1 model, scheme 2 cache
    assert predicted["predictions"][0]["top"][0]["label"] == "limes"


def test_a_scheme1_cache_of_another_backbone_is_still_refused(cli, tmp_path):
    data = make_dataset(tmp_path / "data", per_class=3)
    cli("embed", data, "--quiet")
    with h5py.File("cache/embeddings.h5", "r+") as f:
        fp = json.loads(f.attrs["fingerprint"])
        old = scheme1({**fp, "weights_sha256": "f" * 64})
        f.attrs["fingerprint"], f.attrs["fingerprint_id"] = json.dumps(old), old["id"]
        as_schema_1_file(f)
    r = cli("embed", data, expect=3)
    assert "differs in: weights_sha256" in r.stderr


def test_vectors_are_reused_across_id_schemes(cli, tmp_path):
    """A scheme 1 cache gives its vectors to a today's (scheme 2) fingerprint and back: predict and
    neighbors reuse them instead of embedding again (they compared raw ids before)."""
    data = make_dataset(tmp_path / "data", per_class=6)
    cli("embed", data, "--quiet")
    now = json.loads(cli("info", "--json").stdout)["fingerprint"]
    columns = cache.load_columns("cache/embeddings.h5")
    wanted = set(columns.hashes[:4])
    fresh = cache.vectors_for_hashes("cache/embeddings.h5", wanted, now)
    old = rewrite_as_scheme1("cache/embeddings.h5")
    assert old["id"] != now["id"]
    for fp in (now, now["id"], old, old["id"]):
        got = cache.vectors_for_hashes("cache/embeddings.h5", wanted, fp)
        assert set(got) == wanted and all(np.array_equal(got[h], fresh[h]) for h in wanted)
    other = {**now, "weights_sha256": "0" * 64}
    other["id"] = backbones.fingerprint_id(other)
    assert cache.vectors_for_hashes("cache/embeddings.h5", wanted, other) == {}
