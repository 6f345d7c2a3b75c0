"""The README's flags, through the CLI: `embed --rehash`, `neighbors --exact`, `duplicates --threshold`."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np

from embedflow import cache

from ..conftest import make_dataset


def test_embed_rehash_reads_every_file_again(cli, tmp_path, monkeypatch):
    """README: a rerun does not read unchanged files; `--rehash` reads and hashes every one."""
    from embedflow.embedding import incremental

    data = make_dataset(tmp_path / "data", per_class=4)
    for p in data.rglob("*.*"):
        os.utime(p, (1_600_000_000, 1_600_000_000))  # modified long ago: not hashed again by a plain rerun
    cli("embed", data, "--quiet")
    reads = []
    real_hash = incremental.hash_file
    monkeypatch.setattr(incremental, "hash_file", lambda path: reads.append(path.name) or real_hash(path))
    plain = json.loads(cli("embed", data, "--json").stdout)
    assert reads == [] and plain["embedded"] == 0
    rehashed = json.loads(cli("embed", data, "--rehash", "--json").stdout)
    assert sorted(reads) == sorted(p.name for p in data.rglob("*.*")) and len(reads) == 12
    assert rehashed["embedded"] == 0  # same content: nothing to embed


def test_neighbors_exact_is_the_brute_force_answer(cli, tmp_path):
    data = make_dataset(tmp_path / "data", per_class=5)
    cli("embed", data, "--quiet")
    out = json.loads(cli("neighbors", "--key", "limes/limes_002.JPEG", "--k", "4", "--exact", "--json").stdout)
    assert out["method"] == "exact"
    held = cache.load("cache/embeddings.h5")
    vectors = held.embeddings / np.linalg.norm(held.embeddings, axis=1, keepdims=True)
    row = held.keys.index("limes/limes_002.JPEG")
    scores = vectors @ vectors[row]
    scores[row] = -np.inf  # not its own neighbour
    order = np.argsort(-scores, kind="stable")[:4]
    got = out["results"][0]["neighbors"]
    assert [n["key"] for n in got] == [held.keys[i] for i in order]
    np.testing.assert_allclose([n["score"] for n in got], scores[order], atol=1e-4)


def test_duplicates_threshold_decides_which_pairs_are_linked(cli, tmp_path):
    """At 1.0 only the byte-identical copy is a group; lowering the threshold links more, never fewer."""
    data = make_dataset(tmp_path / "data", per_class=5)
    shutil.copy(data / "apples" / "apples_001.png", data / "apples" / "again.png")
    cli("embed", data, "--quiet")

    def grouped(threshold: str) -> set[frozenset]:
        out = json.loads(cli("duplicates", "--threshold", threshold, "--exact", "--json").stdout)
        return {frozenset(m["key"] for m in g["members"]) for g in out["groups"]}

    strict = grouped("1.0")
    assert strict == {frozenset({"apples/apples_001.png", "apples/again.png"})}
    loose = grouped("0.5")
    assert len(loose) >= 1 and sum(map(len, loose)) > 2  # the colour classes link up at 0.5
    assert all(any(g <= h for h in loose) for g in strict)  # every strict group stays within a loose one
    r = cli("duplicates", "--threshold", "1.5", expect=2)
    assert len(r.stderr.strip().splitlines()) == 1


def test_help_shows_every_option_with_fixed_choices_as_bracketed_choices():
    """Each option taking one of a few words shows them the same way, [a|b|c]; and brackets in the help
    text itself (pip install 'embedflow[s3]') are printed, not taken for markup."""
    from ..conftest import invoke

    wanted = {
        "embed": ["--precision [fp32|int8]", "--runtime [auto|litert|keras]", "--engine [local|ray]",
                  "embedflow[s3]", "embedflow[ray]"],
        "fit": ["--head [logreg|svm|dense|knn]", "--kernel [auto|rbf|linear]", "--class-weight [balanced]"],
        "evaluate": ["--split [train|val|test|all]", "--runtime [auto|litert|keras]"],
        "predict": ["--format [text|tsv|csv|jsonl]"],
        "export": ["--format [tflite|keras]", "--quantize [none|dynamic|float16|int8]"],
    }
    for command, shown in wanted.items():
        text = " ".join(invoke(command, "--help").stdout.split())
        for words in shown:
            assert words in text, (command, words, text)
