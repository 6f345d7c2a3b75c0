"""The one batch mapper (embedding.mapper.map_batch) and the engines that wrap it, without a backbone:
`fn` is a function of the pixels we can check exactly."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from embedflow.data import ImageRef, load_image
from embedflow.embedding import decode_refs, map_batch
from embedflow.embedding.ray_engine import EmbedActor

from ..conftest import make_image

DIM = 3


def mean_colour(pixels: np.ndarray) -> np.ndarray:
    """A stand-in backbone: (n, S, S, 3) uint8 -> (n, 3) float32 mean colour."""
    return pixels.reshape(len(pixels), -1, 3).mean(axis=1).astype(np.float32)


def items_with_a_bad_file(tmp_path):
    good = [make_image(tmp_path / f"g{i}.png", (40 * i, 90, 200), i) for i in range(3)]
    bad = tmp_path / "bad.jpg"
    bad.write_text("not a picture")
    paths = [good[0], bad, good[1], good[2]]
    return [(ImageRef(p.name, p, None), sha256(p)) for p in paths]


def sha256(path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_map_batch_skips_bad_files_and_runs_fn_once_on_the_good_ones_in_order(tmp_path):
    items = items_with_a_bad_file(tmp_path)
    calls = []
    result = map_batch(items, 16, lambda px: calls.append(len(px)) or mean_colour(px), DIM)
    assert calls == [3]
    assert [(ref.key, h) for ref, h in result.ok] == [(items[i][0].key, items[i][1]) for i in (0, 2, 3)]
    assert [(ref.key, h) for ref, h, _ in result.bad] == [("bad.jpg", items[1][1])]
    assert result.bad[0][2].startswith("not an image file")
    expected = mean_colour(np.stack([load_image(ref.path, 16) for ref, _ in result.ok]))
    np.testing.assert_array_equal(result.vectors, expected)


def test_map_batch_without_fn_returns_the_pixels(tmp_path):
    items = items_with_a_bad_file(tmp_path)
    result = map_batch(items, 16)
    assert result.vectors.shape == (3, 16, 16, 3) and result.vectors.dtype == np.uint8
    np.testing.assert_array_equal(result.vectors[1], load_image(items[2][0].path, 16))


def test_map_batch_of_only_bad_files_never_calls_fn(tmp_path):
    items = items_with_a_bad_file(tmp_path)[1:2]
    result = map_batch(items, 16, lambda px: (_ for _ in ()).throw(AssertionError("fn called")), DIM)
    assert result.ok == [] and len(result.bad) == 1
    assert result.vectors.shape == (0, DIM) and result.vectors.dtype == np.float32


def test_ray_actor_gives_one_row_per_path_with_zeros_and_reasons_for_bad_files(tmp_path):
    """The Ray actor is a thin wrapper: its rows are map_batch's, put back in input order."""
    items = items_with_a_bad_file(tmp_path)
    actor = object.__new__(EmbedActor)  # no Ray and no backbone: the stand-in instead
    actor.spec = SimpleNamespace(image_size=16, output_dim=DIM)
    actor.embedder = mean_colour
    out = actor({"path": np.array([str(ref.path) for ref, _ in items]), "hash": np.array([h for _, h in items])})
    assert list(out["hash"]) == [h for _, h in items]
    assert [bool(e) for e in out["error"]] == [False, True, False, False]
    assert out["error"][1].startswith("not an image file")
    reference = map_batch(items, 16, mean_colour, DIM).vectors
    np.testing.assert_array_equal(out["vector"][[0, 2, 3]], reference)
    np.testing.assert_array_equal(out["vector"][1], np.zeros(DIM, np.float32))


def test_decode_refs_uses_the_same_decoding_and_skips(tmp_path):
    items = items_with_a_bad_file(tmp_path)
    decoded = decode_refs([ref for ref, _ in items], 16, workers=2)
    assert [r.key for r in decoded.refs] == ["g0.png", "g1.png", "g2.png"]
    assert [(r.key, reason[:17]) for r, reason in decoded.failed] == [("bad.jpg", "not an image file")]
    np.testing.assert_array_equal(decoded.pixels, map_batch(items, 16).vectors)


def test_a_file_whose_bytes_are_not_the_hashed_ones_is_skipped_never_embedded_under_that_hash(tmp_path):
    """Hash what you decode: the pixels come from the bytes whose sha256 is checked against the plan's hash."""
    from embedflow.embedding.mapper import CHANGED

    items = items_with_a_bad_file(tmp_path)
    make_image(items[2][0].path, (0, 0, 0), 99)  # rewritten after it was hashed
    seen = []
    result = map_batch(items, 16, lambda px: seen.append(px.copy()) or mean_colour(px), DIM)
    assert [ref.key for ref, _ in result.ok] == ["g0.png", "g2.png"]
    assert [(ref.key, h, reason) for ref, h, reason in result.bad if reason == CHANGED] == [("g1.png", items[2][1], CHANGED)]
    assert not any(np.array_equal(px, load_image(items[2][0].path, 16)) for px in seen[0])
    assert map_batch([(items[2][0], "")], 16).ok[0][1] == sha256(items[2][0].path)  # no hash given: the bytes'


def test_a_file_rewritten_between_hash_and_decode_never_poisons_the_cache(tmp_path, tiny_spec, monkeypatch):
    """embed hashes every file, then decodes the new ones: a file rewritten in between must not give its new
    content's vector under its old hash (which an untouched byte-identical copy would then inherit)."""
    import shutil

    from embedflow import cache
    from embedflow.embedding import embed_folder, mapper

    from ..conftest import make_dataset

    data = make_dataset(tmp_path / "data", per_class=3)
    victim = data / "apples" / "apples_000.jpg"
    shutil.copy(victim, data / "apples" / "copy_of_000.jpg")  # same content, untouched
    original = victim.read_bytes()
    real_read, rewritten = mapper.read_image, []

    def rewrite_first(path, size, **kw):  # the file changes after hashing, just before its decode
        if path.name in ("apples_000.jpg", "copy_of_000.jpg") and not rewritten:
            make_image(victim, (0, 0, 255), 4242, fmt="JPEG")
            rewritten.append(path.name)
        return real_read(path, size, **kw)

    monkeypatch.setattr(mapper, "read_image", rewrite_first)
    path = tmp_path / "c.h5"
    first = embed_folder(data, path, spec=tiny_spec)
    monkeypatch.setattr(mapper, "read_image", real_read)
    assert rewritten and victim.read_bytes() != original

    def check(c):  # every stored vector is the one of the content its hash names
        reference = tmp_path / "ref.h5"
        ref_data = tmp_path / "ref"
        shutil.rmtree(ref_data, ignore_errors=True)
        for i, (key, h) in enumerate(zip(c.keys, c.hashes)):
            (ref_data / "x").mkdir(parents=True, exist_ok=True)
            content = original if h == hashlib.sha256(original).hexdigest() else (data / key).read_bytes()
            assert hashlib.sha256(content).hexdigest() == h, key
            (ref_data / "x" / f"{i}.jpg").write_bytes(content)
        reference.unlink(missing_ok=True)
        embed_folder(ref_data, reference, spec=tiny_spec)
        ref = cache.open_cache(reference, vectors=True)
        by_hash = dict(zip(ref.hashes, ref.X))
        for key, h, v in zip(c.keys, c.hashes, c.X):
            np.testing.assert_allclose(v, by_hash[h], rtol=1e-5, atol=1e-6, err_msg=key)

    import hashlib

    c = cache.open_cache(path, vectors=True)
    skipped = dict(first.failed)
    assert mapper.CHANGED in skipped.values()  # the decoded one (and its copies) wait for the next run
    check(c)
    second = embed_folder(data, path, spec=tiny_spec)  # the next run embeds both, each with its own vector
    c = cache.open_cache(path, vectors=True)
    assert {"apples/apples_000.jpg", "apples/copy_of_000.jpg"} <= set(c.keys) and not second.failed
    check(c)


def _with_an_unreadable_profile(path):
    from PIL import Image

    Image.new("RGB", (20, 20), (90, 120, 200)).save(path, icc_profile=b"not a colour profile at all")
    return path


def test_a_decode_note_reaches_the_reporter_once_per_file(tmp_path, cli):
    """Issue 16 (tester): "colour profile unreadable ...: colours taken as sRGB" was appended to notes nobody
    passed. The mapper, the Ray actor, decode_refs and the real `embed` each carry it: one warning per file."""
    from embedflow.progress import ListReporter

    items = items_with_a_bad_file(tmp_path)
    odd = _with_an_unreadable_profile(tmp_path / "odd.png")
    items.append((ImageRef("odd.png", odd, None), sha256(odd)))
    result = map_batch(items, 16, mean_colour, DIM)
    assert [(ref.key, note[:26]) for ref, note in result.notes] == [("odd.png", "colour profile unreadable ")]
    assert [ref.key for ref, _ in result.ok][-1] == "odd.png"  # still embedded

    actor = object.__new__(EmbedActor)
    actor.spec = SimpleNamespace(image_size=16, output_dim=DIM)
    actor.embedder = mean_colour
    out = actor({"path": np.array([str(ref.path) for ref, _ in items]), "hash": np.array([h for _, h in items])})
    assert [bool(n) for n in out["note"]] == [False] * 4 + [True] and not out["error"][4]

    reporter = ListReporter()
    decode_refs([ref for ref, _ in items], 16, workers=2, reporter=reporter)
    assert [w for w in reporter.warnings if "colour profile" in w] == [f"odd.png: {result.notes[0][1]}"]

    data = tmp_path / "data"
    for c, colour in (("apples", (200, 40, 40)), ("limes", (40, 200, 40))):
        for i in range(2):
            make_image(data / c / f"{c}_{i}.png", colour, i)
    _with_an_unreadable_profile(data / "apples" / "odd.png")
    stderr = cli("embed", data).stderr
    lines = [line for line in stderr.splitlines() if "colour profile unreadable" in line]
    assert len(lines) == 1 and "apples/odd.png: colour profile unreadable" in lines[0], stderr
