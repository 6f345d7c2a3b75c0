"""embed: the cache schema, incremental runs, bad files, fingerprints, interruption and resume."""

from __future__ import annotations

import json
import os
import shutil

import h5py
import numpy as np
import pytest

from embedflow import backbones, cache
from embedflow.embedding import Interrupted, embed_folder
from embedflow.errors import CacheLocked

from ..conftest import SIZE, interrupting_factory, make_image


def test_cache_schema_is_plain_hdf5(cli, dataset, weights_file):
    out = cli("embed", dataset, "--quiet")
    assert out.stdout == ""
    with h5py.File("cache/embeddings.h5", "r") as f:
        assert f.attrs["format"] == "embedflow.cache" and f.attrs["schema_version"] == 2
        fp = json.loads(f.attrs["fingerprint"])
        assert fp["backbone"] == "mobilenet_v2" and fp["image_size"] == SIZE and fp["output_dim"] == 1280
        assert fp["weights_sha256"] == backbones.file_sha256(weights_file)
        assert f.attrs["fingerprint_id"] == fp["id"]
        assert f["embeddings"].shape == (18, 1280) and f["embeddings"].dtype == np.float32
        keys = list(f["keys"].asstr()[()])
        assert keys == sorted(keys) and keys[0] == "apples/apples_000.jpg"
        assert list(f["classes"].asstr()[()]) == ["apples", "limes", "plums"]
        labels = f["labels"][()]
        assert [list(f["classes"].asstr()[()])[i] for i in labels] == [k.split("/")[0] for k in keys]
        assert all(len(h) == 64 for h in f["hashes"].asstr()[()])
        assert f["failed/keys"].shape == (0,)
        assert np.isfinite(f["embeddings"][()]).all()


def test_incremental_rerun(cli, dataset, tiny_spec):
    first = json.loads(cli("embed", dataset, "--json").stdout)
    assert first["embedded"] == 18 and first["total"] == 18
    before = cache.load("cache/embeddings.h5")

    def no_backbone(*a, **k):
        raise AssertionError("an unchanged rerun must not build the backbone")

    inode = os.stat("cache/embeddings.h5").st_ino
    again = embed_folder(dataset, "cache/embeddings.h5", spec=tiny_spec, embedder_factory=no_backbone)
    assert (again.embedded, again.kept, again.removed) == (0, 18, 0)
    assert first["runtime"] == "litert" and again.runtime == "none"  # nothing embedded: no runtime ran
    assert os.stat("cache/embeddings.h5").st_ino == inode  # nothing changed: the file is not rewritten
    after = cache.load("cache/embeddings.h5")
    np.testing.assert_array_equal(before.embeddings, after.embeddings)

    (dataset / "apples" / "apples_000.jpg").unlink()  # deleted
    make_image(dataset / "limes" / "limes_001.png", (0, 0, 0), 99, fmt="PNG")  # changed
    make_image(dataset / "plums" / "new.jpg", (90, 50, 160), 77)  # new
    shutil.copy(dataset / "plums" / "plums_000.jpg", dataset / "plums" / "copy.jpg")  # known content
    third = json.loads(cli("embed", dataset, "--json").stdout)
    assert (third["embedded"], third["kept"], third["reused"], third["removed"]) == (2, 16, 1, 1)
    final = cache.load("cache/embeddings.h5")
    assert len(final) == 19 and "apples/apples_000.jpg" not in final.keys
    i, j = final.keys.index("plums/copy.jpg"), final.keys.index("plums/plums_000.jpg")
    np.testing.assert_array_equal(final.embeddings[i], final.embeddings[j])
    k = final.keys.index("limes/limes_001.png")
    assert not np.allclose(final.embeddings[k], before.embeddings[before.keys.index("limes/limes_001.png")])


def test_bad_files_are_skipped_and_reported(cli, dataset):
    (dataset / "apples" / "zero.jpg").write_bytes(b"")
    (dataset / "apples" / "text.jpg").write_text("hello, I am not a JPEG")
    good = (dataset / "limes" / "limes_000.jpg").read_bytes()
    (dataset / "limes" / "cut.jpg").write_bytes(good[: len(good) // 3])
    make_image(dataset / "plums" / "cmyk.jpg", (90, 50, 160), 5, mode="CMYK", fmt="JPEG")
    make_image(dataset / "plums" / "gray.png", (90, 50, 160), 6, mode="L", fmt="PNG")
    r = cli("embed", dataset)
    assert "skipped 3" in r.stdout
    assert "apples/zero.jpg: empty file" in r.stderr and "apples/text.jpg: not an image" in r.stderr
    held = cache.load("cache/embeddings.h5")
    assert "plums/cmyk.jpg" in held.keys and "plums/gray.png" in held.keys and len(held) == 20
    reasons = {k: r for k, r, _ in held.failed}
    assert set(reasons) == {"apples/zero.jpg", "apples/text.jpg", "limes/cut.jpg"}
    # A rerun does not retry unchanged bad files, but still reports them; --strict fails.
    r2 = cli("embed", dataset, "--strict", expect=7)
    assert "embedded 0" in r2.stdout and "3 file(s) skipped" in r2.stderr
    info = cli("info")
    assert "limes/cut.jpg" in info.stdout and "skipped    3" in info.stdout


def test_fingerprint_mismatch_is_refused(cli, dataset, weights_file):
    cli("embed", dataset)
    r = cli("embed", dataset, "--weights", weights_file, "--image-size", "128", tiny=False, expect=3)
    assert "was made with" in r.stderr and "image_size" in r.stderr and "--rebuild" in r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    cli("embed", dataset, "--weights", weights_file, "--image-size", "128", "--rebuild", tiny=False)
    assert json.loads(h5py.File("cache/embeddings.h5", "r").attrs["fingerprint"])["image_size"] == 128


def test_interrupt_keeps_progress_and_resume_matches_uninterrupted(dataset, tiny_spec, tmp_path):
    fp = backbones.fingerprint(tiny_spec)
    reference = embed_folder(dataset, tmp_path / "ref.h5", spec=tiny_spec, batch_size=4)
    path = tmp_path / "c.h5"
    import embedflow.embedding.incremental as E

    old = E.COMMIT_ROWS
    E.COMMIT_ROWS = 4  # commit after every batch
    try:
        with pytest.raises(Interrupted, match="run the same command again"):
            embed_folder(dataset, path, spec=tiny_spec, batch_size=4, workers=1,  # calls in order
                         embedder_factory=interrupting_factory(3))
    finally:
        E.COMMIT_ROWS = old
    assert not path.exists()  # nothing half-written
    journal = cache.Journal(path, fp["id"])
    assert sum(len(np.load(c)["hashes"]) for c in journal.chunks()) == 8
    resumed = embed_folder(dataset, path, spec=tiny_spec, batch_size=4)
    assert (resumed.resumed, resumed.reused, resumed.embedded) == (8, 0, 10)  # taken from the journal
    assert not journal.dir.exists()
    a, b = cache.load(tmp_path / "ref.h5"), cache.load(path)
    assert a.keys == b.keys and a.hashes == b.hashes
    np.testing.assert_allclose(a.embeddings, b.embeddings, rtol=1e-5, atol=1e-5)


def test_second_writer_is_refused(dataset, tiny_spec, tmp_path):
    path = tmp_path / "c.h5"
    with cache.CacheLock(path):
        with pytest.raises(CacheLocked, match=f"in use by process {os.getpid()}"):
            embed_folder(dataset, path, spec=tiny_spec)
    embed_folder(dataset, path, spec=tiny_spec)  # released: works


def test_failed_write_keeps_previous_cache(dataset, tiny_spec, tmp_path, monkeypatch):
    path = tmp_path / "c.h5"
    embed_folder(dataset, path, spec=tiny_spec)
    before = cache.load(path)
    make_image(dataset / "apples" / "extra.jpg", (1, 1, 1), 3)

    def disk_full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cache.store, "_gather", disk_full)
    with pytest.raises(cache.CacheError, match="No space left on device; its previous content is intact"):
        embed_folder(dataset, path, spec=tiny_spec)
    after = cache.load(path)
    assert after.keys == before.keys
    assert not list(tmp_path.glob(".c.h5.tmp*"))


def test_a_failed_first_write_does_not_claim_a_previous_cache_is_intact(dataset, tiny_spec, tmp_path, monkeypatch):
    """There is no previous content to keep on a first run: the messages say that nothing was written
    (the full disk found before the work, while HDF5 writes, and while a journal chunk is committed)."""
    path = tmp_path / "c.h5"

    def disk_full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cache.store, "_gather", disk_full)
    with pytest.raises(cache.CacheError, match="No space left on device; no cache was written") as e:
        embed_folder(dataset, path, spec=tiny_spec)
    assert "intact" not in str(e.value) and not path.exists()
    monkeypatch.undo()
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(cache.CacheError, match="no cache was written") as e:
        embed_folder(dataset, path, spec=tiny_spec)
    assert "intact" not in str(e.value)
    monkeypatch.undo()
    monkeypatch.setattr(cache.journal.np, "savez", disk_full)
    with pytest.raises(cache.CacheError, match="could not write to the journal") as e:
        embed_folder(dataset, tmp_path / "d.h5", spec=tiny_spec)  # (c.h5's journal holds every vector now)
    assert "the cache is intact" not in str(e.value) and "no cache yet" in str(e.value), e.value


def test_litert_matches_keras_reference(dataset, tiny_spec):
    from embedflow.data import load_image

    fp = backbones.fingerprint(tiny_spec)
    pixels = np.stack([load_image(p, SIZE) for p in sorted(dataset.rglob("*.*"))[:6]])
    fast = backbones.make_embedder(tiny_spec, fp, runtime="litert")(pixels)
    ref = backbones.make_embedder(tiny_spec, fp, runtime="keras")(pixels)
    cos = (fast * ref).sum(1) / np.linalg.norm(fast, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() >= 0.9999


def test_non_finite_vectors_are_never_cached(dataset, tiny_spec, tmp_path):
    from embedflow.embedding import BackboneFailure

    def broken(spec, fp, **kw):
        return lambda pixels: np.full((len(pixels), 1280), np.nan, np.float32)

    with pytest.raises(BackboneFailure, match="non-finite"):
        embed_folder(dataset, tmp_path / "c.h5", spec=tiny_spec, embedder_factory=broken)
    assert not (tmp_path / "c.h5").exists()


def test_unchanged_files_are_not_read_again(dataset, tiny_spec, monkeypatch, tmp_path):
    """A file whose size, mtime, ctime and inode are those recorded keeps its hash without being read;
    a changed one is hashed and embedded again, even with the same size and a restored mtime."""
    from embedflow.embedding import incremental as embed

    old = 1_600_000_000
    for p in dataset.rglob("*.*"):
        os.utime(p, (old, old))  # not "racily clean": modified long before the run
    first = embed_folder(dataset, tmp_path / "c.h5", spec=tiny_spec)
    stats = cache.load(tmp_path / "c.h5", vectors=False).file_stats
    assert stats.shape == (18, 4) and (stats[:, 1] == old * 10**9).all()

    reads = []
    real_hash = embed.hash_file
    monkeypatch.setattr(embed, "hash_file", lambda path: reads.append(path) or real_hash(path))
    again = embed_folder(dataset, tmp_path / "c.h5", spec=tiny_spec)
    assert (again.kept, again.embedded, reads) == (18, 0, [])

    target = dataset / "limes" / "limes_001.png"
    size = target.stat().st_size
    data = bytearray(target.read_bytes())
    data[-20] ^= 0xFF  # same size; the mtime put back: only the ctime (and content) differ
    target.write_bytes(bytes(data))
    os.utime(target, (old, old))
    assert target.stat().st_size == size
    third = embed_folder(dataset, tmp_path / "c.h5", spec=tiny_spec)
    assert [p.name for p in reads] == ["limes_001.png"]
    assert third.kept == 17 and third.embedded + len(third.failed) == 1

    reads.clear()
    embed_folder(dataset, tmp_path / "c.h5", spec=tiny_spec, rehash=True)
    assert len(reads) == 18


def test_recently_modified_files_are_hashed_next_time(dataset, tiny_spec, tmp_path):
    embed_folder(dataset, tmp_path / "c.h5", spec=tiny_spec)  # the fixture's files were written just now
    assert not cache.load(tmp_path / "c.h5", vectors=False).file_stats.any()


def test_an_interrupt_before_the_first_vector_says_nothing_was_kept(dataset, tiny_spec, tmp_path):
    """Ctrl-C while the backbone is still being converted: no journal to resume, and the line says so."""
    def interrupted_factory(spec, fp_, **kw):
        raise KeyboardInterrupt

    path = tmp_path / "c.h5"
    with pytest.raises(Interrupted, match="^interrupted before any new vector was embedded: nothing was kept"):
        embed_folder(dataset, path, spec=tiny_spec, batch_size=4, workers=1, embedder_factory=interrupted_factory)
    assert not path.exists() and not cache.Journal(path, "").chunks()


def test_a_journal_of_another_precision_is_replaced_with_a_warning(dataset, tiny_spec, tmp_path):
    """An interrupted int8 run's chunks, then a run of another fingerprint: it cannot use them, says so."""
    from embedflow.progress import ListReporter

    path = tmp_path / "c.h5"
    other = cache.Journal(path, "another-fingerprint", "int8")
    other.append(["ab" * 32], np.ones((1, 8), np.float32))
    rep = ListReporter()
    summary = embed_folder(dataset, path, spec=tiny_spec, batch_size=4, reporter=rep)
    assert summary.embedded == 18 and len(cache.load(path)) == 18
    assert any("1 chunk(s) of an interrupted run of another backbone or precision (int8)" in w
               for w in rep.warnings), rep.warnings
    assert not cache.Journal(path, "").chunks()


def test_another_folder_into_a_cache_is_refused_when_it_would_remove_most_of_it(cli, dataset, tmp_path):
    """A mistyped or other folder embedded into an existing cache would drop its rows: one line, exit 2, the
    cache untouched; a moved copy of the same folder (same keys) is followed; --rebuild replaces on purpose."""
    cli("embed", dataset)
    before = cache.load("cache/embeddings.h5", vectors=False)
    other = tmp_path / "other"
    for i, colour in enumerate([(200, 10, 10), (10, 10, 200)]):
        make_image(other / f"k{i}" / f"x{i}.png", colour, 900 + i, fmt="PNG")
    r = cli("embed", other, expect=2)
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("error: cache cache/embeddings.h5 holds") and "would remove" in line and "--rebuild" in line
    after = cache.load("cache/embeddings.h5", vectors=False)
    assert after.keys == before.keys and after.root == before.root
    moved = shutil.copytree(dataset, tmp_path / "moved")
    r = cli("embed", moved)
    assert "embedded 0" in r.stdout and "it now follows" in r.stderr
    cli("embed", other, "--rebuild")
    assert sorted(cache.load("cache/embeddings.h5", vectors=False).keys) == ["k0/x0.png", "k1/x1.png"]
