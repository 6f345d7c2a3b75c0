"""The switch from exact search to the faiss index at 50,000 vectors, and what happens without faiss
(faiss blocked in a child process, as on a machine where it is not installed), on real cache files of
low-dimensional vectors (the switch depends on the row count only)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from embedflow import api, search
from embedflow.search.index import INDEX_MIN_ROWS

from .test_search_exact_index_duplicates import clustered, write_cache

pytest.importorskip("faiss", reason="the approximate index needs faiss-cpu: pip install 'embedflow[index]'")
KEY = "a/k0000.png"


@pytest.fixture(scope="module")
def at_threshold(tmp_path_factory):
    """A cache of exactly INDEX_MIN_ROWS (50,000) vectors, and one of a single row fewer."""
    folder = tmp_path_factory.mktemp("switch")
    vectors = clustered(INDEX_MIN_ROWS, dim=8, clusters=20)
    return write_cache(folder / "big.h5", vectors), write_cache(folder / "below.h5", vectors[:-1])


def test_the_threshold_is_the_documented_50000():
    assert INDEX_MIN_ROWS == 50_000


@pytest.mark.slow  # writes caches of 50,000 rows
def test_auto_search_switches_to_the_index_at_50000_vectors(at_threshold):
    big, below = at_threshold
    small = api.neighbors(keys=[KEY], k=5, cache_path=below, reporter=None)
    assert small["method"] == "exact" and not search.index_paths(below)[0].exists()
    large = api.neighbors(keys=[KEY], k=5, cache_path=big, reporter=None)
    assert large["method"] == "index" and search.index_paths(big)[0].is_file()
    assert json.loads(search.index_paths(big)[1].read_text())["count"] == 50_000
    exact = api.neighbors(keys=[KEY], k=5, cache_path=big, method="exact", reporter=None)
    # the index finds (almost) the exact answer
    found = {n["key"] for n in large["results"][0]["neighbors"]}
    assert len(found & {n["key"] for n in exact["results"][0]["neighbors"]}) >= 4


BLOCK_FAISS = "import sys; sys.modules['faiss'] = None; sys.argv = ['embedflow', *sys.argv[1:]]; " \
              "from embedflow.cli import run; run()"


def cli_without_faiss(*args, cwd):
    return subprocess.run([sys.executable, "-c", BLOCK_FAISS, *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


@pytest.mark.slow  # writes caches of 50,000 rows
def test_without_faiss_a_large_cache_is_searched_exactly_with_a_warning(at_threshold, tmp_path):
    big, _ = at_threshold
    done = cli_without_faiss("neighbors", "--key", KEY, "--k", "5", "--cache", big, "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["method"] == "exact"
    assert "faiss-cpu is not installed; searching exactly" in done.stderr and "Traceback" not in done.stderr
    want = api.neighbors(keys=[KEY], k=5, cache_path=big, method="exact", reporter=None)
    assert out["results"] == want["results"]


@pytest.mark.slow  # writes caches of 50,000 rows
def test_without_faiss_index_is_refused_with_the_install_hint(at_threshold, tmp_path):
    big, _ = at_threshold
    done = cli_without_faiss("neighbors", "--key", KEY, "--cache", big, "--index", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: the approximate index needs faiss-cpu: pip install 'embedflow[index]' (or use --exact)"]
    dup = cli_without_faiss("duplicates", "--cache", big, "--index", cwd=tmp_path)
    assert dup.returncode == 2 and "pip install 'embedflow[index]'" in dup.stderr


def test_duplicates_index_finds_the_exact_groups(tmp_path):
    """`duplicates --index` (each image's 32 nearest neighbours through the index) groups as --exact does
    when every group is smaller than 32."""
    rng = np.random.default_rng(3)
    vectors = clustered(3000, dim=16, clusters=40, seed=3)
    copies = rng.choice(3000, 30, replace=False)
    vectors[copies[:15]] = vectors[copies[15:]] + rng.normal(0, 1e-3, (15, 16))  # 15 planted near-copies
    path = write_cache(tmp_path / "c.h5", vectors)
    exact = api.duplicates(path, threshold=0.999, method="exact", reporter=None)
    index = api.duplicates(path, threshold=0.999, method="index", reporter=None)
    groups = {frozenset(m.key for m in g.members) for g in exact.groups}
    assert len(groups) >= 15
    assert {frozenset(m.key for m in g.members) for g in index.groups} == groups
