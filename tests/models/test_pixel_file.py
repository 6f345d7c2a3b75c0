"""Fine-tuning reads its images from a raw uint8 file decoded once (models.pixel_file), batch by batch
through tf.data: the file holds what the in-memory decoder gives, bad files are skipped for the same
reasons, and the training pipeline yields the same batches as the in-memory one."""

from __future__ import annotations

import numpy as np
import pytest

from ..conftest import make_dataset


@pytest.fixture
def tree(tmp_path):
    root = make_dataset(tmp_path / "data", per_class=4)
    (root / "limes" / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    return root


def test_the_file_holds_the_pixels_the_in_memory_decoder_gives_and_the_same_skips(tree, tmp_path):
    from embedflow.embedding import decode_folder
    from embedflow.finetune import decode_streamed

    memory = decode_folder(tree, 32)
    streamed = decode_streamed(tree, 32, tmp_path / "images.u8")
    assert [r.key for r in streamed.refs] == [r.key for r in memory.refs]
    assert streamed.hashes == memory.hashes and streamed.classes == memory.classes
    np.testing.assert_array_equal(streamed.labels, memory.labels)
    assert [(r.key, why) for r, why in streamed.failed] == [(r.key, why) for r, why in memory.failed]
    assert [r.key for r, _ in streamed.failed] == ["limes/broken.jpg"]
    np.testing.assert_array_equal(np.asarray(streamed.pixels), memory.pixels)
    assert (tmp_path / "images.u8").stat().st_size == memory.pixels.nbytes
    assert not list(tmp_path.glob("*.partial"))


def test_views_read_the_rows_they_name(tree, tmp_path):
    from embedflow.finetune import decode_streamed

    data = decode_streamed(tree, 16, tmp_path / "images.u8")
    everything = np.asarray(data.pixels)
    rows = np.array([5, 0, 7, 3])
    sub = data.subset(rows)
    assert sub.pixels.shape == (4, 16, 16, 3) and sub.pixels.dtype == np.uint8
    np.testing.assert_array_equal(sub.pixels[1:3], everything[[0, 7]])
    np.testing.assert_array_equal(sub.pixels[np.array([3, 0])], everything[[3, 5]])
    np.testing.assert_array_equal(sub.pixels[2], everything[7])
    np.testing.assert_array_equal(sub.subset([3, 1]).pixels[0:2], everything[[3, 0]])
    assert [r.key for r in sub.refs] == [data.refs[i].key for i in rows]
    np.testing.assert_array_equal(sub.labels, data.labels[rows])


def test_a_failed_decode_leaves_no_partial_file(tmp_path, monkeypatch):
    from embedflow.data import ImageRef
    from embedflow.models import pixel_file

    img = make_dataset(tmp_path / "data", per_class=1)
    refs = [ImageRef("apples/apples_000.jpg", img / "apples" / "apples_000.jpg", "apples")]

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(pixel_file, "decode_ref", boom)
    with pytest.raises(KeyboardInterrupt):
        pixel_file.decode_to_file(refs, 16, ["apples"], tmp_path / "images.u8")
    assert not list(tmp_path.glob("images.u8*"))


def test_the_streamed_pipeline_gives_the_batches_of_the_in_memory_one(tree, tmp_path):
    import importlib

    finetune = importlib.import_module("embedflow.finetune")

    import tensorflow as tf

    def in_memory(x, y, seed):  # the pipeline of every row held as a tensor (what finetune used before)
        ds = tf.data.Dataset.from_tensor_slices((x, y))
        if seed is not None:
            ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
        return list(ds.batch(4).as_numpy_iterator())

    data = finetune.decode_streamed(tree, 16, tmp_path / "images.u8")
    X = np.asarray(data.pixels)
    onehot = np.eye(3, dtype=np.float32)[data.labels]
    rows = np.array([7, 0, 3, 9, 1, 4, 10])  # a subset, as stage 1 trains on the training rows
    for seed in (None, 3):
        cases = ((in_memory(X, onehot, seed), finetune.image_dataset(data.pixels, onehot, 4, shuffle_seed=seed)),
                 (in_memory(X, onehot, seed), finetune.image_dataset(X, onehot, 4, shuffle_seed=seed)),
                 (in_memory(X[rows], onehot[rows], seed),
                  finetune.image_dataset(X, onehot[rows], 4, shuffle_seed=seed, rows=rows)))
        for want, pipeline in cases:
            got = list(pipeline.as_numpy_iterator())
            assert len(got) == len(want) >= 2
            for (xa, ya), (xb, yb) in zip(want, got):
                assert xb.dtype == np.uint8 and xb.shape == xa.shape
                np.testing.assert_array_equal(xa, xb)
                np.testing.assert_array_equal(ya, yb)
