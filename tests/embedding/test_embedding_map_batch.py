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
    return [(ImageRef(p.name, p, None), f"h{i}") for i, p in enumerate(paths)]


def test_map_batch_skips_bad_files_and_runs_fn_once_on_the_good_ones_in_order(tmp_path):
    items = items_with_a_bad_file(tmp_path)
    calls = []
    result = map_batch(items, 16, lambda px: calls.append(len(px)) or mean_colour(px), DIM)
    assert calls == [3]
    assert [(ref.key, h) for ref, h in result.ok] == [("g0.png", "h0"), ("g1.png", "h2"), ("g2.png", "h3")]
    assert [(ref.key, h) for ref, h, _ in result.bad] == [("bad.jpg", "h1")]
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
    assert list(out["hash"]) == ["h0", "h1", "h2", "h3"]
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
