"""The sharded cache (schema 4): immutable shards + an index file with a virtual /embeddings that plain
h5py reads, incremental runs that write only new shards, masked rows honoured by every reader,
compaction, and SIGKILL during a shard write, the index rename and a compaction."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from embedflow import cache
from embedflow.cache import shards
from embedflow.embedding import embed_folder
from embedflow.errors import CacheError

from ..conftest import ROOT, make_image

FP = {"backbone": "synthetic", "image_size": 32, "weights_sha256": "0" * 64, "id": "0123456789abcdef", "output_dim": 16}
DIM = 16


@pytest.fixture(autouse=True)
def sharded(monkeypatch):
    """Every cache of these tests is written sharded, in shards of 256 rows."""
    monkeypatch.setenv("EMBEDFLOW_SHARD_MIN_ROWS", "1")
    monkeypatch.setattr(shards, "SHARD_ROWS", 256)


def vectors_for(tag: str, n: int) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(abs(hash(tag)) % 2**32)
    return rng.normal(0, 1, (n, DIM)).astype(np.float32), [hashlib.sha256(f"{tag}-{i}".encode()).hexdigest()
                                                            for i in range(n)]


def source(folder: Path, tag: str, n: int) -> tuple[Path, np.ndarray, list[str]]:
    x, hashes = vectors_for(tag, n)
    src = folder / f"{tag}.npz"
    np.savez(src, hashes=np.array(hashes, dtype="S64"), vectors=x)
    return src, x, hashes


def first_cache(folder: Path, n: int = 600) -> tuple[Path, dict]:
    """A sharded cache of n rows (keys a/k0000.png...), and key -> vector."""
    folder.mkdir(parents=True, exist_ok=True)
    src, x, hashes = source(folder, "first", n)
    path = folder / "embeddings.h5"
    rows = [cache.Row(f"{'ab'[i % 2]}/k{i:04d}.png", hashes[i], i % 2, src, i, (i + 1, 2, 3, 4)) for i in range(n)]
    cache.write(path, rows, ["a", "b"], FP, "/data", [], DIM)
    return path, {r.key: x[i] for i, r in enumerate(rows)}


def rerun(path: Path, drop: set[str], add: dict[str, tuple[str, np.ndarray]], folder: Path, tag: str) -> None:
    """What an incremental `embed` hands the writer: kept rows from the cache, new ones from a chunk."""
    old = cache.load(path, vectors=False)
    rows = [cache.Row(k, h, int(lab), path, i) for i, (k, h, lab) in enumerate(zip(old.keys, old.hashes, old.labels))
            if k not in drop]
    if add:
        src = folder / f"{tag}.npz"
        np.savez(src, hashes=np.array([h for h, _ in add.values()], dtype="S64"),
                 vectors=np.array([v for _, v in add.values()], np.float32))
        rows += [cache.Row(k, h, 0, src, i) for i, (k, (h, _)) in enumerate(add.items())]
    cache.write(path, rows, ["a", "b"], FP, "/data", [], DIM)


def assert_content(path: Path, want: dict) -> None:
    """Every reader sees exactly the live rows `want` (key -> vector)."""
    held = cache.load(path)
    assert sorted(held.keys) == sorted(want)
    assert all(np.array_equal(v, want[k]) for k, v in zip(held.keys, held.embeddings))
    opened = cache.open_cache(path)
    assert opened.keys == held.keys and np.array_equal(opened.X, held.embeddings)
    blocks = list(cache.iter_vector_blocks(path, 100))
    assert [s for s, _ in blocks] == list(range(0, len(want), 100))
    assert np.array_equal(np.concatenate([b for _, b in blocks]) if blocks else np.zeros((0, DIM)), held.embeddings)
    rows = np.array([len(want) - 1, 0, len(want) // 2, 0])
    assert np.array_equal(cache.read_vectors(path, rows), held.embeddings[rows])
    got = cache.vectors_for_hashes(path, {held.hashes[-1]}, FP)
    assert np.array_equal(got[held.hashes[-1]], held.embeddings[-1])
    assert cache.cache_info(path).count == len(want) == cache.load_columns(path).__len__()


def shard_files(path: Path) -> dict[str, tuple]:
    folder = cache.store.shard_folder(path)
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


def test_plain_h5py_reads_the_virtual_matrix_after_the_folder_is_moved(tmp_path):
    path, want = first_cache(tmp_path / "c")
    assert list(shard_files(path)) == ["shard-00001.h5", "shard-00002.h5", "shard-00003.h5"]  # 256 + 256 + 88 rows
    moved = tmp_path / "elsewhere" / "copy"
    shutil.copytree(tmp_path / "c", moved)
    shutil.rmtree(tmp_path / "c")
    script = textwrap.dedent(f"""
        import h5py, numpy as np
        with h5py.File({str(moved / 'embeddings.h5')!r}, "r") as f:
            x = f["embeddings"][:]
            keys = list(f["keys"].asstr()[()])
            assert f["embeddings"].is_virtual and f["mask"][:].sum() == 0
            assert all(not s.file_name.startswith("/") for s in f["embeddings"].virtual_sources())
        np.save({str(tmp_path / 'x.npy')!r}, x)
        print(len(keys), keys[0])
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd="/", capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["600", "a/k0000.png"]
    x = np.load(tmp_path / "x.npy")
    held = cache.load(moved / "embeddings.h5")
    assert np.array_equal(x, held.embeddings) and all(np.array_equal(want[k], v) for k, v in zip(held.keys, x))
    assert cache.read_meta(moved / "embeddings.h5")["schema_version"] == 4


def test_incremental_write_adds_one_shard_and_masks_removed_rows(tmp_path):
    path, want = first_cache(tmp_path)
    before = shard_files(path)
    new_vectors, new_hashes = vectors_for("new", 10)
    changed = "b/k0001.png"
    add = {f"c/n{i}.png": (new_hashes[i], new_vectors[i]) for i in range(9)}
    add[changed] = (new_hashes[9], new_vectors[9])  # same key, new content: the old row is masked
    rerun(path, {"a/k0000.png", "a/k0002.png", changed}, add, tmp_path, "second")
    after = shard_files(path)
    assert {k: after[k] for k in before} == before  # the old shards were not touched
    assert sorted(set(after) - set(before)) == ["shard-00004.h5"]
    folder = cache.store.shard_folder(path)
    assert cache.cache_info(path).size_bytes == path.stat().st_size + sum(
        (folder / name).stat().st_size for name in after)
    with h5py.File(path, "r") as f:
        assert f["embeddings"].shape == (610, DIM) and int(f["mask"][:].sum()) == 3
        assert list(f["shard_rows"][:]) == [256, 256, 88, 10]
    for k in ("a/k0000.png", "a/k0002.png"):
        del want[k]
    want.update({k: v for k, (_, v) in add.items()})
    assert_content(path, want)


def test_unchanged_rows_are_not_rewritten_and_labels_follow_the_new_class_table(tmp_path):
    path, want = first_cache(tmp_path, 300)
    old = cache.load(path, vectors=False)
    rows = [cache.Row(k, h, 1 - int(lab), path, i) for i, (k, h, lab) in enumerate(zip(old.keys, old.hashes, old.labels))]
    before = shard_files(path)
    cache.write(path, rows, ["a", "b"], FP, "/data", [], DIM)
    assert shard_files(path) == before
    assert list(cache.load(path, vectors=False).labels) == [1 - int(x) for x in old.labels]
    assert_content(path, want)


def test_compaction_when_a_quarter_is_masked(tmp_path):
    path, want = first_cache(tmp_path)
    drop = {k for i, k in enumerate(sorted(want)) if i % 3 == 0}  # 200 of 600: a third
    rerun(path, drop, {}, tmp_path, "none")
    assert list(shard_files(path)) == ["shard-00004.h5", "shard-00005.h5"]  # 400 live rows, fresh shards
    with h5py.File(path, "r") as f:
        assert f["embeddings"].shape == (400, DIM) and int(f["mask"][:].sum()) == 0
    assert_content(path, {k: v for k, v in want.items() if k not in drop})
    rerun(path, set(want) - drop, {}, tmp_path, "none2")  # every row removed
    assert len(cache.load(path)) == 0 and list(shard_files(path)) == []


def test_missing_or_damaged_shard_is_one_cache_error(tmp_path):
    path, _ = first_cache(tmp_path)
    cache.load_columns(path)  # the columns do not need the shards
    shard = cache.store.shard_folder(path) / "shard-00002.h5"
    data = bytearray(shard.read_bytes())
    with h5py.File(shard, "r") as f:
        offset = f["embeddings"].id.get_chunk_info(0).byte_offset
    data[offset + 100] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(CacheError, match="damaged"):
        cache.load(path)
    shard.unlink()
    with pytest.raises(CacheError, match=r"shard-00002\.h5 cannot be read.*--rebuild"):
        cache.load(path)


def test_info_names_a_missing_shard_and_not_its_rows_as_bad_vectors(tmp_path):
    """The virtual matrix reads a missing shard's rows as NaN: diagnose (what `info` lists) names the missing
    file with its rows' count and keys instead of calling those rows non-finite vectors."""
    path, _ = first_cache(tmp_path)
    assert cache.store.diagnose(path) == []
    with h5py.File(path, "r") as f:
        table = [s.decode() if isinstance(s, bytes) else s for s in f["shards"][:]]
        counts = [int(r) for r in f["shard_rows"][:]]
    (cache.store.shard_folder(path) / table[1]).unlink()
    problems = cache.store.diagnose(path)
    assert [p["problem"] for p in problems] == [f"shard file {table[1]} is missing"], problems
    assert problems[0]["count"] == counts[1] and len(problems[0]["keys"]) == cache.store.EXAMPLES
    (cache.store.shard_folder(path) / table[1]).write_bytes(b"not an HDF5 file")
    assert [p["problem"] for p in cache.store.diagnose(path)] == [f"shard file {table[1]} cannot be opened as a shard"]


KILLER = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    import numpy as np
    os.environ["EMBEDFLOW_SHARD_MIN_ROWS"] = "1"
    from embedflow import cache
    from embedflow.cache import shards
    shards.SHARD_ROWS = 256
    path, phase, drop, src = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
    real_replace, real_unlink = os.replace, Path.unlink

    def replace(a, b):
        name = Path(b).name
        if (phase == "shard" and name.startswith("shard-")) or (phase == "index" and name == path.name):
            os.kill(os.getpid(), signal.SIGKILL)  # before the rename
        real_replace(a, b)
        if phase == "after-index" and name == path.name:
            os.kill(os.getpid(), signal.SIGKILL)  # renamed, old shards not yet removed

    def unlink(self, *a, **k):
        if phase == "removing" and self.name.startswith("shard-"):
            real_unlink(self, *a, **k)
            os.kill(os.getpid(), signal.SIGKILL)  # one old shard removed, the others not
        return real_unlink(self, *a, **k)

    os.replace, Path.unlink = replace, unlink
    old = cache.load(path, vectors=False)
    rows = [cache.Row(k, h, int(l), path, i) for i, (k, h, l) in enumerate(zip(old.keys, old.hashes, old.labels))
            if i % drop]
    with np.load(src) as z:
        rows += [cache.Row(f"c/n{i}.png", h.decode(), 0, src, i) for i, h in enumerate(z["hashes"])]
    cache.write(path, rows, ["a", "b"], {FP}, "/data", [], {DIM})
""").replace("{FP}", repr(FP)).replace("{DIM}", str(DIM))


@pytest.mark.parametrize("phase,drop", [("shard", 100), ("index", 100), ("shard", 2), ("index", 2),
                                        ("after-index", 2), ("removing", 2)])
def test_sigkill_during_shard_write_index_rename_or_compaction(tmp_path, phase, drop):
    """drop 100: an incremental write (1% masked); drop 2: a compaction (half masked). Killed before a
    shard's rename, before the index's rename, after it, or while old shards are removed: the cache opens
    with every committed row (the old content before the index rename, the new one after), and the next
    writer removes the orphaned shards and writes the expected content."""
    path, want = first_cache(tmp_path)
    src, x, hashes = source(tmp_path, "added", 20)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", KILLER, str(path), phase, str(drop), str(src)], env=env,
                       capture_output=True, text=True)
    assert r.returncode == -9, r.stderr
    old_keys = sorted(want)
    new_want = {k: want[k] for i, k in enumerate(old_keys) if i % drop}
    new_want.update({f"c/n{i}.png": x[i] for i in range(20)})
    committed = new_want if phase in ("after-index", "removing") else want
    assert_content(path, committed)
    assert _table(path) <= set(shard_files(path))
    # the next writer clears what no index names: the same command again, or (committed) a rerun
    if committed is want:
        r = subprocess.run([sys.executable, "-c", KILLER, str(path), "none", str(drop), str(src)], env=env,
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    else:
        rerun(path, set(), {}, tmp_path, "unchanged")
    assert_content(path, new_want)
    assert set(shard_files(path)) == _table(path)
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]


def _table(path: Path) -> set[str]:
    with h5py.File(path, "r") as f:
        return set(f["shards"].asstr()[()])


def photo_tree(tmp_path: Path, per_class: int) -> tuple[Path, Path]:
    """(a two-class folder of per_class JPEGs each, the cache path beside it)."""
    root = tmp_path / "photos"
    for ci, c in enumerate(("apples", "limes")):
        for i in range(per_class):
            make_image(root / c / f"{i}.jpg", (200 * (1 - ci), 150, 40), seed=10 * ci + i)
    return root, tmp_path / "cache" / "embeddings.h5"


def test_embed_incremental_run_writes_one_new_shard(tmp_path, tiny_spec, monkeypatch):
    """The real pipeline: a sharded cache from `embed`, one photo added and one removed, a rerun."""
    root, path = photo_tree(tmp_path, 5)
    embed_folder(root, cache_path=path, spec=tiny_spec)
    first = cache.load(path)
    before = shard_files(path)
    make_image(root / "limes" / "new.jpg", (10, 220, 30), seed=99)
    (root / "apples" / "0.jpg").unlink()
    calls = counted_index_reads(monkeypatch)
    checks = []
    real_validated = cache.store._validated
    monkeypatch.setattr(cache.store, "_validated", lambda *a, **k: checks.append(a[1]) or real_validated(*a, **k))
    summary = embed_folder(root, cache_path=path, spec=tiny_spec)
    assert calls == []  # the writer reused the index embed had read (and checked) to plan the run
    assert checks == [path]  # ... and embed read and checked the old cache once
    monkeypatch.setattr(cache.store, "_validated", real_validated)
    after = shard_files(path)
    assert {k: after[k] for k in before} == before and len(after) == len(before) + 1
    held = cache.load(path)
    assert "apples/0.jpg" not in held.keys and "limes/new.jpg" in held.keys and len(held) == 10
    same = {k: v for k, v in zip(first.keys, first.embeddings)}
    assert all(np.array_equal(same[k], v) for k, v in zip(held.keys, held.embeddings) if k in same)
    assert summary.to_dict()["embedded"] == 1
    rebuilt = tmp_path / "single" / "embeddings.h5"
    monkeypatch.delenv("EMBEDFLOW_SHARD_MIN_ROWS")
    embed_folder(root, cache_path=rebuilt, spec=tiny_spec)
    single = cache.load(rebuilt)
    assert cache.read_meta(rebuilt)["schema_version"] == 2 and sorted(single.keys) == sorted(held.keys)
    by_key = {k: v for k, v in zip(held.keys, held.embeddings)}
    assert all(np.allclose(by_key[k], v, atol=1e-5) for k, v in zip(single.keys, single.embeddings))


def test_embed_refuses_a_sharded_cache_with_a_missing_shard_instead_of_keeping_its_rows(tmp_path, tiny_spec):
    """An unchanged or incremental `embed` rerun never reads the shards it keeps; it still opens each one,
    so a missing or unreadable shard is one CacheError naming it (exit 4), not "kept N" and a new index
    pointing at a file no reader can open. The cache and its other shards are left as they were."""
    root, path = photo_tree(tmp_path, 4)
    embed_folder(root, cache_path=path, spec=tiny_spec)
    make_image(root / "limes" / "new.jpg", (10, 220, 30), seed=99)
    embed_folder(root, cache_path=path, spec=tiny_spec)  # a second shard
    shards = sorted(cache.store.shard_folder(path).glob("shard-*.h5"))
    assert len(shards) == 2
    shards[0].unlink()
    index = path.read_bytes()
    with pytest.raises(CacheError, match=rf"{shards[0].name} cannot be read.*--rebuild"):
        embed_folder(root, cache_path=path, spec=tiny_spec)
    make_image(root / "limes" / "newer.jpg", (10, 200, 60), seed=98)
    with pytest.raises(CacheError, match=rf"{shards[0].name} cannot be read"):
        embed_folder(root, cache_path=path, spec=tiny_spec)
    assert path.read_bytes() == index and shards[1].exists()


def test_free_space_to_add_rows_to_a_sharded_cache_does_not_grow_with_the_cache():
    """Adding 10 photos to a 1M-row sharded cache needs room for 10 vectors and a new index, not ~5 GB."""
    keys = [f"c/{i:07d}.jpg" for i in range(1_000_000)]
    whole = cache.estimated_write_bytes(False, keys, keys[:10], [], ["c"], 1280)
    add = cache.estimated_write_bytes(True, keys, keys[:10], [], ["c"], 1280)
    assert whole > 5e9 and add < 0.4e9
    assert add >= cache.estimated_bytes(keys[:10], [], ["c"], 1280) + 128 * (len(keys) + len(keys) // 3)


def counted_index_reads(monkeypatch) -> list:
    calls: list = []
    real = shards.old_index

    def counting(path):
        calls.append(path)
        return real(path)

    monkeypatch.setattr(shards, "old_index", counting)
    return calls


def test_the_index_a_caller_read_is_reused_only_while_the_file_is_unchanged(tmp_path, monkeypatch):
    """cache.write(..., read=cache.load(...)) checks the old index once, not twice; a file replaced or
    touched since the read is read and checked again (its shard table is the one the new index extends)."""
    path, want = first_cache(tmp_path)
    calls = counted_index_reads(monkeypatch)
    old = cache.load(path, vectors=False)
    rows = [cache.Row(k, h, lab, path, i) for i, (k, h, lab) in enumerate(zip(old.keys, old.hashes, old.labels.tolist()))]
    new_vectors, new_hashes = vectors_for("passed", 5)
    np.savez(tmp_path / "passed.npz", hashes=np.array(new_hashes, dtype="S64"), vectors=new_vectors)
    added = [cache.Row(f"c/p{i}.png", new_hashes[i], 0, tmp_path / "passed.npz", i) for i in range(5)]
    cache.write(path, rows + added, ["a", "b"], FP, "/data", [], DIM, read=old)
    assert calls == []
    want.update({r.key: new_vectors[i] for i, r in enumerate(added)})
    assert_content(path, want)

    stale = cache.load(path, vectors=False)  # then another run appends 3 rows: the file is replaced
    rerun(path, set(), {f"d/q{i}.png": (h, v) for i, (h, v) in enumerate(zip(*reversed(vectors_for("q", 3))))},
          tmp_path, "between")
    calls.clear()
    kept = [cache.Row(k, h, lab, path, i) for i, (k, h, lab) in enumerate(zip(stale.keys, stale.hashes,
                                                                             stale.labels.tolist()))]
    cache.write(path, kept, ["a", "b"], FP, "/data", [], DIM, read=stale)
    assert calls == [path]
    with h5py.File(path, "r") as f:  # the current table (with the 3 rows, masked), not the stale one
        assert list(f["shard_rows"][:]) == [256, 256, 88, 5, 3] and int(f["mask"][:].sum()) == 3
    assert_content(path, want)

    touched = cache.load(path, vectors=False)
    st = path.stat()
    time.sleep(0.05)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # same inode, size and mtime; ctime moves
    assert shards.passed_index(path, touched) is False
    assert shards.passed_index(path, cache.load(path, vectors=False)) is not False
    assert shards.passed_index(tmp_path / "other.h5", touched) is False and shards.passed_index(path, None) is False


def test_sharded_cache_with_variable_length_hashes_still_opens_and_grows(tmp_path):
    """Schema 4 as first written (variable-length /hashes) opens unchanged; new index files hold the hashes
    as fixed 64-byte ascii strings, which plain h5py reads the same way."""
    path, want = first_cache(tmp_path)
    with h5py.File(path, "r") as f:
        assert f["hashes"].dtype == h5py.string_dtype("ascii", 64)
        hashes = list(f["hashes"].asstr()[()])
    with h5py.File(path, "r+") as f:  # what an index written before fixed-length hashes holds
        del f["hashes"]
        f.create_dataset("hashes", data=hashes, dtype=h5py.string_dtype("ascii"))
    assert cache.load(path, vectors=False).hashes == hashes
    assert_content(path, want)
    new_vectors, new_hashes = vectors_for("vlen", 2)
    rerun(path, {"a/k0000.png"}, {"c/v0.png": (new_hashes[0], new_vectors[0])}, tmp_path, "vlen")
    del want["a/k0000.png"]
    want["c/v0.png"] = new_vectors[0]
    assert_content(path, want)
    with h5py.File(path, "r") as f:
        assert f["hashes"].dtype == h5py.string_dtype("ascii", 64) and h5py.check_string_dtype(f["hashes"].dtype)
