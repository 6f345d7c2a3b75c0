"""open_cache: columns at once, vectors on first use, and never vectors of another snapshot."""

from __future__ import annotations

import numpy as np
import pytest

from ..conftest import SIZE, make_dataset, make_image


def test_open_cache_reads_vectors_lazily_and_refuses_a_rewritten_file(tmp_path, weights_file):
    from embedflow import embed_folder, open_cache
    from embedflow.cache import load
    from embedflow.errors import CacheError

    data = make_dataset(tmp_path / "data", per_class=4)
    path = tmp_path / "c.h5"
    embed_folder(data, path, image_size=SIZE, weights=str(weights_file))
    lazy, eager = open_cache(path), open_cache(path, vectors=True)
    assert lazy._X is None and len(lazy) == 12 and lazy.root == str(data.resolve())
    held = load(path)
    np.testing.assert_array_equal(lazy.X, held.embeddings)
    np.testing.assert_array_equal(eager.X, held.embeddings)
    assert lazy.keys == held.keys and lazy.hashes == held.hashes and lazy.y.dtype == np.int64

    stale = open_cache(path)
    make_image(data / "limes" / "new.png", (60, 190, 60), 99)
    embed_folder(data, path, image_size=SIZE, weights=str(weights_file))
    with pytest.raises(CacheError, match="changed since it was opened"):
        stale.X
    assert len(open_cache(path)) == 13
