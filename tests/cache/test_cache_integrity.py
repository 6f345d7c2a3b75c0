"""Cache integrity: checksums (schema 2), validation on open, schema-1 caches, the faiss index's sha256,
HDF5 file locking. Every reader ends with exit 0 and the right answer, or one line and exit 4."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest

from embedflow import api, cache
from embedflow.errors import CacheError

from ..conftest import ROOT, embed_and_fit

FP = {"backbone": "synthetic", "image_size": 32, "weights_sha256": "0" * 64, "id": "0123456789abcdef", "output_dim": 16}


def synthetic_cache(path: Path, n: int = 24, dim: int = 16, seed: int = 0, failed=()) -> Path:
    """A real cache file (classes a, b, c; keys CLASS/kNNNN.png) of clustered vectors."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (3, dim))
    labels = np.arange(n) % 3
    vectors = (centres[labels] + rng.normal(0, 0.3, (n, dim))).astype(np.float32)
    hashes = [hashlib.sha256(f"{seed}-{i}".encode()).hexdigest() for i in range(n)]
    src = path.with_name(path.name + ".src.npz")
    np.savez(src, hashes=np.array(hashes, dtype="S64"), vectors=vectors)
    rows = [cache.Row(f"{'abc'[labels[i]]}/k{i:04d}.png", hashes[i], int(labels[i]), src, i, (i + 1, 2, 3, 4))
            for i in range(n)]
    cache.write(path, rows, ["a", "b", "c"], {**FP, "output_dim": dim}, "/data", list(failed), dim)
    src.unlink()
    return path


def downgrade_to_schema_1(path: Path) -> None:
    """Make a cache look like one written by embedflow before schema 2 (no content checksum)."""
    with h5py.File(path, "a") as f:
        f.attrs["schema_version"] = 1
        del f.attrs["content_sha256"]
        del f["vector_crc32"]


def one_line_exit_4(r) -> None:
    err = r.stderr.strip()
    assert r.exit_code == 4, f"exit {r.exit_code}\n{r.stdout}\n{r.stderr}"
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and "Traceback" not in err, err


# --- schema 2 -------------------------------------------------------------------------------------------


def test_schema_2_carries_checksums_and_reads_with_plain_h5py(tmp_path):
    path = synthetic_cache(tmp_path / "c.h5", failed=[("a/bad.jpg", "empty file (0 bytes)", "")])
    with h5py.File(path, "r") as f:
        assert f.attrs["schema_version"] == 2 and cache.SCHEMA_VERSION == 3  # 3 only for unlabelled rows or splits
        assert f["embeddings"].fletcher32 and f["labels"].fletcher32 and f["file_stats"].fletcher32
        assert f["embeddings"].dtype == np.float32 and f["embeddings"].shape == (24, 16)
        assert len(f.attrs["content_sha256"]) == 64
        assert list(f["classes"].asstr()[()]) == ["a", "b", "c"]
    held = cache.load(path)
    assert held.keys[0] == "a/k0000.png" and held.failed == [("a/bad.jpg", "empty file (0 bytes)", "")]
    assert cache.read_meta(path)["schema_version"] == 2


def test_empty_cache_round_trips(tmp_path):
    path = synthetic_cache(tmp_path / "c.h5", n=0)
    held = cache.load(path)
    assert len(held) == 0 and held.embeddings.shape == (0, 16) and held.classes == ["a", "b", "c"]


def test_a_changed_string_is_caught_by_the_content_checksum(tmp_path):
    """Strings live in HDF5's global heap, which has no checksum of its own: content_sha256 covers them."""
    path = synthetic_cache(tmp_path / "c.h5")
    data = bytearray(path.read_bytes())
    at = data.find(b"b/k0001.png")
    assert at > 0
    data[at:at + 11] = b"c/k0001.png"  # same length, same class folder layout: plausible, and wrong
    path.write_bytes(bytes(data))
    with pytest.raises(CacheError, match=r"is damaged \(content checksum mismatch\); embed again with --rebuild"):
        cache.load_columns(path)


SWEEP = textwrap.dedent("""
    import json
    import sys
    import numpy as np
    from pathlib import Path
    from embedflow import cache
    from embedflow.errors import CacheError

    src, step = Path(sys.argv[1]), int(sys.argv[2])
    clean = cache.load(src)
    data = bytes(src.read_bytes())
    work = src.with_name("flipped.h5")
    rng = np.random.default_rng(0)
    counts = {"refused": 0, "same": 0}
    wrong = []
    for offset in range(0, len(data), step):
        flipped = bytearray(data)
        flipped[offset] ^= int(rng.integers(1, 256))
        work.write_bytes(flipped)
        try:
            got = cache.load(work)
            columns = cache.load_columns(work)
            meta = cache.read_meta(work)
            blocks = np.concatenate([b for _, b in cache.iter_vector_blocks(work, 7)])
            some = cache.read_vectors(work, [3, 0, 3])
            known = cache.vectors_for_hashes(work, set(clean.hashes[:5]), clean.fingerprint["id"])
        except CacheError:
            counts["refused"] += 1
            continue
        same = (got.keys == clean.keys == columns.keys and got.hashes == clean.hashes == columns.hashes
                and np.array_equal(got.labels, clean.labels) and got.classes == clean.classes == meta["classes"]
                and got.failed == clean.failed and got.fingerprint == clean.fingerprint == columns.fingerprint
                and got.root == clean.root and np.array_equal(got.file_stats, clean.file_stats)
                and np.array_equal(got.embeddings, clean.embeddings) and np.array_equal(blocks, clean.embeddings)
                and np.array_equal(some, clean.embeddings[[3, 0, 3]])
                and all(np.array_equal(known[h], clean.embeddings[i]) for i, h in enumerate(clean.hashes[:5])))
        if same:
            counts["same"] += 1
        else:
            wrong.append(offset)
    print(json.dumps({**counts, "wrong": wrong, "size": len(data)}))
""")


def test_flipped_bytes_anywhere_are_refused_or_harmless(tmp_path):
    """One byte changed at every few offsets of a small cache, read by every store reader in a separate
    process (a crash inside HDF5 would show as its exit status): each read is refused with CacheError or
    returns exactly the clean content, never a silently different vector, key, label or hash."""
    path = synthetic_cache(tmp_path / "c.h5", failed=[("a/bad.jpg", "empty file (0 bytes)", "")])
    out = subprocess.run([sys.executable, "-c", SWEEP, str(path), "23"], capture_output=True, text=True,
                         cwd=ROOT, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["wrong"] == [], result
    assert result["refused"] > result["size"] // 23 // 2, result  # most of the file is checked content
    assert result["same"] > 0, result  # padding and free space: harmless flips exist too


# --- every reader through the CLI, on a real cache with byte flips ---------------------------------------


@pytest.fixture(scope="module")
def embedded(tmp_path_factory, weights_file):
    return embed_and_fit(tmp_path_factory.mktemp("integrity"), weights_file)


READERS = {
    "info": lambda c: ["info", "--cache", c, "--json"],
    "fit": lambda c: ["fit", "--cache", c, "--head", "logreg", "--out", "refit", "--json"],
    "evaluate": lambda c: ["evaluate", "models/logreg", c, "--json", "--out", "eval"],
    "neighbors": lambda c: ["neighbors", "--key", "limes/limes_002.JPEG", "--k", "4", "--cache", c, "--exact", "--json"],
    "duplicates": lambda c: ["duplicates", "--cache", c, "--exact", "--threshold", "0.99", "--json"],
    "embed": lambda c: ["embed", "data", "--cache", c, "--json"],
}


def answer(name: str, stdout: str):
    """What must not change: a reader's result without timings."""
    out = json.loads(stdout)
    if name == "fit":
        return out["report"], out["n_train"]
    if name == "evaluate":
        return out["accuracy"], out["confusion_matrix"]
    if name == "embed":
        return out["total"], out["kept"], out["embedded"], out["removed"]
    if name == "info":
        return {k: v for k, v in out.items() if k != "path"}
    return out


def flip_offsets(data: bytes) -> list[int]:
    """Offsets worth flipping: spread over the whole file, in the metadata at its start, inside the key
    strings and inside the vectors."""
    spread = list(range(0, len(data), max(1, len(data) // 24)))
    head = list(range(0, 2048, 173))
    key = data.find(b"apples/apples_001")
    strings = [key, key + 7, key + 15] if key >= 0 else []
    return sorted(set(spread + head + strings))


def test_every_reader_on_flipped_bytes_exits_0_right_or_4_one_line(embedded, cli, tmp_path):
    for name in ("data", "cache", "models"):
        shutil.copytree(embedded / name, tmp_path / name)
    path = tmp_path / "cache" / "embeddings.h5"
    cli(*READERS["embed"](path))  # the copied folder has new inodes and root: recorded once
    clean_bytes = path.read_bytes()
    expected = {name: answer(name, cli(*args(path)).stdout) for name, args in READERS.items()}
    assert path.read_bytes() == clean_bytes  # readers and an unchanged embed wrote nothing
    refused = 0
    offsets = flip_offsets(clean_bytes)
    for offset in offsets:
        flipped = bytearray(clean_bytes)
        flipped[offset] ^= 0x5A
        path.write_bytes(bytes(flipped))
        for name, args in READERS.items():
            r = cli(*args(path), expect=None)
            if r.exit_code == 0:
                assert answer(name, r.stdout) == expected[name], (offset, name)
            else:
                one_line_exit_4(r)
                assert "--rebuild" in r.stderr or "cannot read cache" in r.stderr, r.stderr
                refused += 1
        assert path.read_bytes() == bytes(flipped), offset  # nothing "repaired" a damaged cache in place
    assert refused >= len(offsets)  # most flips hit checked content


def test_sign_flipped_vector_never_changes_an_answer(embedded, cli, tmp_path):
    """The issue's case: the sign bits of one stored vector flipped. Schema 2 refuses the cache where the
    vectors are read; predict (which only reuses cached vectors) embeds the image itself instead."""
    for name in ("data", "cache", "models"):
        shutil.copytree(embedded / name, tmp_path / name)
    path = tmp_path / "cache" / "embeddings.h5"
    image = "data/plums/plums_004.png"
    clean = json.loads(cli("predict", "models/logreg", image, "--json").stdout)
    vector = cache.load(path).embeddings[cache.load(path).keys.index("plums/plums_004.png")]
    data = bytearray(path.read_bytes())
    at = data.find(vector.tobytes())
    assert at > 0
    for i in range(3, vector.nbytes, 4):
        data[at + i] ^= 0x80
    path.write_bytes(bytes(data))
    for name in ("fit", "evaluate", "neighbors", "duplicates"):
        r = cli(*READERS[name](path), expect=None)
        one_line_exit_4(r)
        assert f"cache {path} is damaged" in r.stderr and "--rebuild" in r.stderr
    assert json.loads(cli("predict", "models/logreg", image, "--json").stdout)["predictions"] == clean["predictions"]


# --- validation on open (schema 1 caches have no checksums: these checks are all they get) --------------


def _edit(path: Path, name: str, value) -> None:
    with h5py.File(path, "a") as f:
        del f[name]
        f[name] = value


DAMAGE = {
    "labels shorter": (lambda p: _edit(p, "labels", np.zeros(5, np.int32)), "row counts differ", False),
    "hashes longer": (lambda p: _edit(p, "hashes", np.array(["0" * 64] * 40, dtype="S64")), "row counts differ", False),
    "label out of range": (lambda p: _edit(p, "labels", np.full(24, 7, np.int32)), "labels outside 0..2", False),
    "negative label": (lambda p: _edit(p, "labels", np.full(24, -1, np.int32)), "labels outside", False),
    "empty class table": (lambda p: _edit(p, "classes", np.array([], dtype="S1")), "empty class table", False),
    "1-d vectors": (lambda p: _edit(p, "embeddings", np.zeros(24, np.float32)), "2-d float32 matrix", False),
    "string vectors": (lambda p: _edit(p, "embeddings", np.array([["x"] * 16] * 24, dtype="S3")), "2-d float32 matrix", False),
    "float16 vectors": (lambda p: _edit(p, "embeddings", np.zeros((24, 16), np.float16)), "2-d float32 matrix", False),
    "float64 vectors": (lambda p: _edit(p, "embeddings", np.zeros((24, 16), np.float64)), "2-d float32 matrix", False),
    "labels as strings": (lambda p: _edit(p, "labels", np.array(["0"] * 24, dtype="S1")), "not an integer array", False),
    "key leaves the root": (lambda p: _edit(p, "keys", [f"../k{i:04d}.png" for i in range(24)]), "leaves the dataset root", False),
    "absolute key": (lambda p: _edit(p, "keys", [f"/etc/k{i:04d}.png" for i in range(24)]), "leaves the dataset root", False),
    "repeated keys": (lambda p: _edit(p, "keys", ["a/k.png"] * 24), "repeated keys", False),
    "hash not a sha256": (lambda p: _edit(p, "hashes", ["zz" * 32] * 24), "not a sha256", False),
    "fingerprint not json": (lambda p: h5py.File(p, "a").attrs.__setitem__("fingerprint", "{nope"), "not a fingerprint", False),
    "classes missing": (lambda p: _edit_del(p, "classes"), "no dataset /classes", False),
    "NaN vector": (lambda p: _set_row(p, 4, np.nan), "non-finite or out-of-range vector", True),
    "infinite vector": (lambda p: _set_row(p, 5, np.inf), "non-finite or out-of-range vector", True),
    "huge vector": (lambda p: _set_row(p, 6, 3e37), "non-finite or out-of-range vector", True),
}


def _edit_del(path: Path, name: str) -> None:
    with h5py.File(path, "a") as f:
        del f[name]


def _set_row(path: Path, row: int, value: float) -> None:
    with h5py.File(path, "a") as f:
        f["embeddings"][row] = value


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_inconsistent_cache_is_one_line_for_every_reader(cli, tmp_path, damage):
    path = synthetic_cache(tmp_path / "c.h5")
    downgrade_to_schema_1(path)
    make, message, vectors_only = DAMAGE[damage]
    make(path)
    r = cli("info", "--cache", path, expect=None)
    one_line_exit_4(r)  # info checks the vectors too, and says what is wrong
    assert message in r.stderr and message in r.stdout, (r.stdout, r.stderr)
    (tmp_path / "data" / "a").mkdir(parents=True)
    for args in (["fit", "--cache", path, "--out", "m"], ["neighbors", "--key", "a/k0000.png", "--cache", path],
                 ["duplicates", "--cache", path], ["embed", "data", "--cache", path]):
        r = cli(*args, expect=None)
        if args[0] == "embed" and vectors_only:
            continue  # a rerun that keeps every row reads no vectors
        if args[0] == "embed" and r.exit_code == 2:
            continue  # the empty data folder is refused first: no cache read at all
        one_line_exit_4(r)
        assert message in r.stderr or "no image with key" in r.stderr, (args, r.stderr)


def _set_labels(path: Path, rows, value: int) -> None:
    with h5py.File(path, "a") as f:
        labels = f["labels"][()]
        labels[rows] = value
        del f["labels"]
        f["labels"] = labels


def _set_keys(path: Path, rows, keys) -> None:
    with h5py.File(path, "a") as f:
        old = list(f["keys"].asstr()[()])
        for row, key in zip(rows, keys):
            old[row] = key
        del f["keys"]
        f["keys"] = old


def test_info_lists_every_problem_with_counts_and_keys_and_exits_4(cli, tmp_path):
    """Non-finite vectors, labels out of range and keys leaving the root in one cache: `info` names each
    (one line, a count, a few keys; the JSON's `problems`), exit 4; the API raises CacheDamaged with the same list."""
    from embedflow.errors import CacheDamaged

    path = synthetic_cache(tmp_path / "c.h5")
    downgrade_to_schema_1(path)
    key = cache.load(path).keys
    _set_row(path, 4, np.nan)
    _set_row(path, 5, np.inf)
    _set_labels(path, [0, 1, 2], 7)
    _set_keys(path, [9, 10], ["../up.png", "/etc/passwd"])
    want = [
        {"problem": "labels outside 0..2", "count": 3, "keys": key[:3]},
        {"problem": "keys whose path leaves the dataset root", "count": 2, "keys": ["../up.png", "/etc/passwd"]},
        {"problem": "non-finite or out-of-range vectors", "count": 2, "keys": key[4:6]},
    ]
    r = cli("info", "--cache", path, "--json", expect=None)
    one_line_exit_4(r)
    assert json.loads(r.stdout) == {"path": str(path), "problems": want}
    assert r.stderr.strip() == (f"error: cache {path} is damaged (labels outside 0..2; and 2 more problems); "
                                "embed again with --rebuild")
    r = cli("info", "--cache", path, expect=None)
    one_line_exit_4(r)
    assert r.stdout.splitlines() == [
        f"cache      {path}: damaged, 3 problems",
        f"problem    labels outside 0..2: 3 rows, e.g. {', '.join(key[:3])}",
        "problem    keys whose path leaves the dataset root: 2 rows, e.g. ../up.png, /etc/passwd",
        f"problem    non-finite or out-of-range vectors: 2 rows, e.g. {', '.join(key[4:6])}",
    ]
    with pytest.raises(CacheDamaged) as e:
        api.info(path)
    assert e.value.problems == want and e.value.exit_code == 4


def test_info_names_shape_and_dtype_problems_each_on_its_line(cli, tmp_path):
    path = synthetic_cache(tmp_path / "c.h5")
    downgrade_to_schema_1(path)
    _edit(path, "labels", np.array(["0"] * 24, dtype="S1"))
    _edit(path, "hashes", np.array(["0" * 64] * 30, dtype="S64"))
    r = cli("info", "--cache", path, "--json", expect=None)
    one_line_exit_4(r)
    problems = [p["problem"] for p in json.loads(r.stdout)["problems"]]
    assert problems == ["/labels is not an integer array of 1 dimension(s) (|S1, shape (24,))",
                        "row counts differ: embeddings 24, keys 24, hashes 30, file_stats 24"], problems


def test_info_of_a_sound_cache_lists_no_problems(cli, tmp_path):
    path = synthetic_cache(tmp_path / "c.h5")
    assert json.loads(cli("info", "--cache", path, "--json").stdout)["problems"] == []


def test_damaged_schema_2_is_refused_before_its_columns_are_used(cli, tmp_path):
    path = synthetic_cache(tmp_path / "c.h5")
    _edit(path, "labels", np.full(24, 7, np.int32))  # without updating content_sha256
    r = cli("info", "--cache", path, expect=None)
    one_line_exit_4(r)
    assert "content checksum mismatch" in r.stderr


# --- schema 1 caches still open, and become schema 2 when written ---------------------------------------


def test_schema_1_cache_opens_and_is_upgraded_when_embed_writes_it(cli, dataset, tmp_path):
    cli("embed", dataset)
    path = tmp_path / "cache" / "embeddings.h5"
    before = cache.load(path)
    downgrade_to_schema_1(path)
    with h5py.File(path, "a") as f:  # and without checksummed chunks, as schema 1 wrote it
        emb = f["embeddings"][()]
        del f["embeddings"]
        f.create_dataset("embeddings", data=emb)
    assert "schema 1" in cli("info").stdout
    cli("fit", "--head", "logreg")
    assert json.loads(cli("embed", dataset, "--json").stdout)["kept"] == 18
    assert cache.read_meta(path)["schema_version"] == 1  # an unchanged rerun writes nothing
    (dataset / "apples" / "apples_000.jpg").unlink()
    cli("embed", dataset)
    after = cache.load(path)
    assert cache.read_meta(path)["schema_version"] == 2 and "schema 2" in cli("info").stdout
    with h5py.File(path, "r") as f:
        assert f["embeddings"].fletcher32
    assert after.keys == before.keys[1:] and np.array_equal(after.embeddings, before.embeddings[1:])


# --- the faiss index --------------------------------------------------------------------------------------


def test_index_with_permuted_ids_is_rebuilt_not_used(tmp_path):
    faiss = pytest.importorskip("faiss")
    from embedflow import search

    path = synthetic_cache(tmp_path / "c.h5", n=90)
    clean = api.neighbors(keys=["b/k0001.png"], k=5, cache_path=path, method="index")  # builds the index
    clean_dups = api.duplicates(path, threshold=0.9, method="index")
    index_file, sidecar = search.index_paths(path)
    assert len(json.loads(sidecar.read_text())["index_sha256"]) == 64
    index = faiss.read_index(str(index_file))
    invlists, permuted = index.invlists, 0
    for lst in range(index.nlist):  # the same vectors, each list's ids reversed: same size, wrong answers
        size = invlists.list_size(lst)
        if size > 1:
            ids = faiss.rev_swig_ptr(invlists.get_ids(lst), size).copy()
            codes = faiss.rev_swig_ptr(invlists.get_codes(lst), size * invlists.code_size).copy()
            invlists.update_entries(lst, 0, size, faiss.swig_ptr(ids[::-1].copy()), faiss.swig_ptr(codes))
            permuted += size
    faiss.write_index(index, str(index_file))
    assert permuted > 45
    assert index_file.stat().st_size == json.loads(sidecar.read_text())["index_bytes"]  # the size check passes
    got = api.neighbors(keys=["b/k0001.png"], k=5, cache_path=path, method="index")
    assert got["results"] == clean["results"]
    assert api.duplicates(path, threshold=0.9, method="index") == clean_dups
    assert hashlib.sha256(index_file.read_bytes()).hexdigest() == json.loads(sidecar.read_text())["index_sha256"]


# --- HDF5's own file locking ------------------------------------------------------------------------------

HOLDER = textwrap.dedent("""
    import sys, time, h5py
    f = h5py.File(sys.argv[1], "a")  # HDF5 file locking on, as any h5py session has it
    print("open", flush=True)
    time.sleep(60)
""")


def test_a_session_holding_the_cache_open_for_writing_does_not_block_readers(cli, tmp_path):
    path = synthetic_cache(tmp_path / "c.h5")
    expected = cache.load(path)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        held = cache.load(path)
        assert held.keys == expected.keys and np.array_equal(held.embeddings, expected.embeddings)
        assert json.loads(cli("info", "--cache", path, "--json").stdout)["count"] == 24
        cli("fit", "--cache", path, "--out", tmp_path / "m")
        cli("neighbors", "--key", "a/k0000.png", "--cache", path)
        cli("duplicates", "--cache", path)
    finally:
        holder.kill()
        holder.wait()


# --- readers racing a writer -----------------------------------------------------------------------------

RACING_WRITER = textwrap.dedent("""
    import json, sys
    import numpy as np
    from pathlib import Path
    from embedflow import cache
    path, src, fp = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3])
    for n in range(int(sys.argv[4])):
        rows = 300 if n % 2 else 600
        vec = np.random.default_rng(n).normal(0, 1, (rows, 16)).astype(np.float32)
        hashes = [f"{i + 1000 * n:064x}" for i in range(rows)]
        np.savez(src, hashes=np.array(hashes, dtype="S64"), vectors=vec)
        r = [cache.Row(f"{'abc'[i % 3]}/{i:05d}.jpg", hashes[i], i % 3, src, i) for i in range(rows)]
        with cache.CacheLock(path):
            cache.write(path, r, ["a", "b", "c"], fp, "/data", [], 16)
        print(n, flush=True)
""")


def test_every_reader_racing_a_writer_is_exit_0_or_one_line(cli, tmp_path):
    path = tmp_path / "c.h5"
    cmd = [sys.executable, "-c", RACING_WRITER, str(path), str(tmp_path / "src.npz"), json.dumps(FP)]
    subprocess.run(cmd + ["1"], check=True, cwd=ROOT)
    cli("fit", "--cache", path, "--val-split", "0", "--out", "m")
    writer = subprocess.Popen(cmd + ["40"], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    outcomes = {"ok": 0, "refused": 0}
    readers = [["info", "--cache", path, "--json"], ["fit", "--cache", path, "--val-split", "0", "--out", "m2"],
               ["evaluate", "m", path, "--out", "ev"], ["neighbors", "--key", "b/00001.jpg", "--cache", path],
               ["duplicates", "--cache", path, "--exact"]]
    rounds = 0
    while writer.poll() is None or rounds < 3:  # a fast writer may finish first: read on until 3 rounds ran
        rounds += 1
        for args in readers:
            r = cli(*args, expect=None)
            if r.exit_code == 0:
                outcomes["ok"] += 1
            else:
                one_line_exit_4(r)
                assert "was replaced by another run" in r.stderr, r.stderr
                outcomes["refused"] += 1
    assert writer.wait() == 0
    assert outcomes["ok"] >= 10, outcomes


def test_the_joined_key_check_finds_what_the_key_by_key_check_finds():
    """store._unsafe_key searches all keys at once behind a substring prefilter (_may_be_unsafe); on random
    keys made of the characters that matter (separators, dots, drive colons) it must name the same first
    unsafe key as the pattern applied to each key alone."""
    from embedflow.cache import store

    rng = np.random.default_rng(7)
    alphabet = list("ab./\\:C") + ["..", "x/y", "é"]
    for _ in range(3000):
        keys = ["".join(rng.choice(alphabet, size=rng.integers(0, 6))) for _ in range(rng.integers(1, 5))]
        expected = next((k for k in keys if store._UNSAFE_KEY.search(k)), None)
        assert store._unsafe_key(keys) == expected, keys
    assert store._unsafe_key(["a/b.png", "c/d.jpg"]) is None
    assert store._unsafe_key(["a/b.png", "c/../d.jpg"]) == "c/../d.jpg"
