"""--engine ray: a real local Ray cluster embeds the folder; the cache equals a local-engine run's."""

from __future__ import annotations

import json

import numpy as np
import pytest

from embedflow import cache

from ..conftest import make_dataset, make_image

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'embedflow[ray]'")
pytestmark = pytest.mark.slow  # starts a local Ray cluster


@pytest.fixture
def ray_cluster(embedflow_home):
    """A real local cluster of 2 CPUs (workers inherit EMBEDFLOW_HOME: the converted backbone is shared)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def test_ray_engine_matches_local(cli, tmp_path, ray_cluster):
    data = make_dataset(tmp_path / "data", per_class=8)
    (data / "apples" / "broken.jpg").write_bytes(b"not a jpeg at all")
    local = json.loads(cli("embed", data, "--cache", "local.h5", "--json").stdout)
    remote = json.loads(cli("embed", data, "--cache", "ray.h5", "--engine", "ray", "--workers", "2", "--json").stdout)
    assert remote["runtime"].startswith("ray") and remote["embedded"] == local["embedded"] == 24
    a, b = cache.load("local.h5"), cache.load("ray.h5")
    assert a.keys == b.keys and a.hashes == b.hashes and a.classes == b.classes
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_allclose(a.embeddings, b.embeddings, rtol=1e-5, atol=1e-6)
    assert a.failed == b.failed and b.failed[0][0] == "apples/broken.jpg"
    assert a.fingerprint["id"] == b.fingerprint["id"]

    # incremental: only the new file goes out to the cluster
    make_image(data / "plums" / "late.jpg", (90, 50, 160), 4242)
    again = json.loads(cli("embed", data, "--cache", "ray.h5", "--engine", "ray", "--json").stdout)
    assert (again["embedded"], again["kept"]) == (1, 24)


def test_a_ctrl_c_that_ray_wrapped_is_still_a_ctrl_c():
    """Ray Data may re-raise a Ctrl-C caught in one of its threads as another exception: the engine gives the
    KeyboardInterrupt back, so embed commits its journal and exits 130 (not a traceback and exit 1)."""
    from embedflow.embedding.ray_engine import _caused_by_interrupt

    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as inner:
            raise RuntimeError("executor shut down") from inner
    except RuntimeError as wrapped:
        assert _caused_by_interrupt(wrapped)
    try:
        try:
            raise ValueError("a real failure")
        except ValueError:
            raise RuntimeError("while handling it")  # noqa: B904
    except RuntimeError as other:
        assert not _caused_by_interrupt(other)
